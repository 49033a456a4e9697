# The Flex Consumption (FC1) plan and the function app running galbridge as a custom handler
# (runtime "custom" 1.0, docs/microsoft-facts.md §7), using the user-assigned identity for everything.
#
# Flex Consumption quirk (docs/microsoft-facts.md §9): FUNCTIONS_WORKER_RUNTIME and WEBSITE_RUN_FROM_PACKAGE
# must not be set. Provider quirk: APPLICATIONINSIGHTS_CONNECTION_STRING is managed through
# site_config.application_insights_connection_string (the provider moves that key out of
# app_settings when it reads the app back, so setting it in app_settings gives a permanent diff).
#
# Provider bug worked around below (azapi_resource_action.app_settings_without_webjobs_storage):
# whatever storage_authentication_type says, the resource writes its own app setting
# AzureWebJobsStorage = "DefaultEndpointsProtocol=https;AccountName=…;AccountKey=;…", a connection
# string with an empty key (helpers.ExpandSiteConfigFunctionFlexConsumptionApp, unchanged from
# v4.55.0 to v4.81.0 and in v5.2.0; https://github.com/hashicorp/terraform-provider-azurerm/issues/29693,
# #30732, #29149, #33211; the fix is the open pull request #29099). A setting whose name is exactly
# the connection name is read as a connection string and wins over the AzureWebJobsStorage__*
# identity settings (https://learn.microsoft.com/azure/azure-functions/functions-reference#connections),
# and shared keys are off on the account: the host could not reach its storage and would never start.
# Setting AzureWebJobsStorage = "" in app_settings is no fix: the key is still there (the Functions
# team reports an injected empty value breaking apps on the .NET 10 host,
# https://github.com/Azure/azure-functions-host/issues/11796), and the provider strips the key on
# read, so the plan never converges (#33211).

resource "azurerm_service_plan" "galbridge" {
  #checkov:skip=CKV_AZURE_225:Zone redundancy is not offered for Flex Consumption in every region; a zone outage delays a sync to the next schedule, and the lease plus checkpoints make the retry safe.
  #checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero; a timer-driven sync needs no always-ready instances, and a missed run is caught up by the next one.
  name                = local.names.plan
  resource_group_name = data.azurerm_resource_group.galbridge.name
  location            = local.location
  os_type             = "Linux"
  sku_name            = "FC1"
  tags                = var.tags
}

resource "azurerm_function_app_flex_consumption" "galbridge" {
  name                = local.names.function_app
  resource_group_name = data.azurerm_resource_group.galbridge.name
  location            = local.location
  service_plan_id     = azurerm_service_plan.galbridge.id
  https_only          = true
  # No publishing passwords: deployments authenticate with Entra ID (azure/login, az, azd).
  webdeploy_publish_basic_authentication_enabled = false
  tags                                           = merge(var.tags, { "azd-service-name" = "galbridge" })

  storage_container_type            = "blobContainer"
  storage_container_endpoint        = "${azurerm_storage_account.galbridge.primary_blob_endpoint}${azurerm_storage_container.deployment.name}"
  storage_authentication_type       = "UserAssignedIdentity"
  storage_user_assigned_identity_id = azurerm_user_assigned_identity.galbridge.id

  runtime_name           = "custom"
  runtime_version        = "1.0"
  maximum_instance_count = var.maximum_instance_count
  instance_memory_in_mb  = var.instance_memory_in_mb

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.galbridge.id]
  }

  site_config {
    minimum_tls_version                    = "1.2"
    http2_enabled                          = true
    application_insights_connection_string = azurerm_application_insights.galbridge.connection_string
  }

  # The settings galbridge and the Functions host read (infra/check_parity.py compares them with Bicep).
  app_settings = {
    AzureWebJobsStorage__accountName          = azurerm_storage_account.galbridge.name
    AzureWebJobsStorage__credential           = "managedidentity"
    AzureWebJobsStorage__clientId             = azurerm_user_assigned_identity.galbridge.client_id
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "ClientId=${azurerm_user_assigned_identity.galbridge.client_id};Authorization=AAD"
    AZURE_CLIENT_ID                           = azurerm_user_assigned_identity.galbridge.client_id
    # The name galbridge's configuration loader reads for the identity to use (src/config/mod.rs).
    GALBRIDGE_MANAGED_IDENTITY_CLIENT_ID = azurerm_user_assigned_identity.galbridge.client_id
    GALBRIDGE_CONFIG                     = var.config_path
    GALBRIDGE_SCHEDULE                   = var.schedule
    GALBRIDGE_KEY_VAULT_URL              = azurerm_key_vault.galbridge.vault_uri
    GALBRIDGE_STATE_TABLE_ENDPOINT       = local.state_table_endpoint
    GALBRIDGE_STATE_TABLE_NAME           = azurerm_storage_table.state.name
    # The identity-based connection GALBRIDGE_QUEUE: the PhonesShard queue trigger's `connection`, and
    # where galbridge sends shards (src/config/mod.rs reads the same three).
    GALBRIDGE_QUEUE__queueServiceUri = local.queue_endpoint
    GALBRIDGE_QUEUE__credential      = "managedidentity"
    GALBRIDGE_QUEUE__clientId        = azurerm_user_assigned_identity.galbridge.client_id
  }

  # The host needs blob access the moment it starts.
  depends_on = [
    azurerm_role_assignment.app_blob_data_owner,
    azurerm_role_assignment.app_table_data_contributor,
    azurerm_role_assignment.app_key_vault_secrets_user,
    azurerm_role_assignment.app_metrics_publisher,
  ]
}

# The workaround: right after the provider has written the app, replace its whole app-settings
# collection (PUT .../config/appsettings, "Replaces the application settings of an app",
# https://learn.microsoft.com/rest/api/appservice/web-apps/update-application-settings) with exactly
# the settings above plus the Application Insights connection string the provider keeps in
# site_config: AzureWebJobsStorage is gone, and the host uses the identity. Every create or update of
# the app re-injects the setting, so every change to the app replaces (re-runs) this action.
# The provider reads AzureWebJobsStorage into storage_access_key, not app_settings, so removing it
# leaves no diff behind. infra/check_flex_policy.py fails if this resource goes missing.
resource "azapi_resource_action" "app_settings_without_webjobs_storage" {
  type        = "Microsoft.Web/sites/config@2024-04-01"
  resource_id = "${azurerm_function_app_flex_consumption.galbridge.id}/config/appsettings"
  method      = "PUT"

  body = {
    properties = merge(
      azurerm_function_app_flex_consumption.galbridge.app_settings,
      { APPLICATIONINSIGHTS_CONNECTION_STRING = azurerm_application_insights.galbridge.connection_string },
    )
  }

  lifecycle {
    replace_triggered_by = [azurerm_function_app_flex_consumption.galbridge]
  }
}
