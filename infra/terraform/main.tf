# Identity, monitoring, storage and Key Vault. The function app: functionapp.tf; roles: roles.tf.

data "azurerm_client_config" "current" {}

data "azurerm_resource_group" "galbridge" {
  name = var.resource_group_name
}

locals {
  location = var.location != "" ? var.location : data.azurerm_resource_group.galbridge.location
  names = {
    identity     = "id-${var.base_name}-${var.name_suffix}"
    storage      = "st${var.base_name}${var.name_suffix}"
    key_vault    = "kv-${var.base_name}-${var.name_suffix}"
    workspace    = "log-${var.base_name}-${var.name_suffix}"
    app_insights = "appi-${var.base_name}-${var.name_suffix}"
    plan         = "plan-${var.base_name}-${var.name_suffix}"
    function_app = "func-${var.base_name}-${var.name_suffix}"
  }
  # Without the trailing slash, as GALBRIDGE_STATE_TABLE_ENDPOINT expects.
  state_table_endpoint = trimsuffix(azurerm_storage_account.galbridge.primary_table_endpoint, "/")
  # Without the trailing slash, as GALBRIDGE_QUEUE__queueServiceUri is written.
  queue_endpoint = trimsuffix(azurerm_storage_account.galbridge.primary_queue_endpoint, "/")
  # The queue functions/PhonesShard/function.json listens to (its queueName is fixed in the package).
  shard_queue_name = "galbridge-phones-shards"
}

resource "azurerm_user_assigned_identity" "galbridge" {
  name                = local.names.identity
  resource_group_name = data.azurerm_resource_group.galbridge.name
  location            = local.location
  tags                = var.tags
}

# Log Analytics + workspace-based Application Insights, local (key) auth off: telemetry is sent with
# the identity (Entra auth), which needs Monitoring Metrics Publisher (roles.tf).
resource "azurerm_log_analytics_workspace" "galbridge" {
  name                          = local.names.workspace
  resource_group_name           = data.azurerm_resource_group.galbridge.name
  location                      = local.location
  sku                           = "PerGB2018"
  retention_in_days             = var.log_retention_in_days
  local_authentication_disabled = true
  tags                          = var.tags
}

resource "azurerm_application_insights" "galbridge" {
  name                          = local.names.app_insights
  resource_group_name           = data.azurerm_resource_group.galbridge.name
  location                      = local.location
  application_type              = "web"
  workspace_id                  = azurerm_log_analytics_workspace.galbridge.id
  local_authentication_disabled = true
  tags                          = var.tags
}

# Storage with shared-key access disabled: the host, the deployment and galbridge use the identity.
resource "azurerm_storage_account" "galbridge" {
  #checkov:skip=CKV_AZURE_33:Queue service logging is set through queue_properties over the data plane, which needs the account key (disabled here) and data_plane_available (off, versions.tf); the shard queue holds only shard descriptions (run id, mailbox lists), and the host logs every invocation.
  #checkov:skip=CKV_AZURE_59:Public network access stays on: Flex Consumption without VNet integration reaches storage from shared outbound addresses (docs/deploy.md "Network hardening").
  #checkov:skip=CKV_AZURE_35:Default network action Allow, for the same reason as CKV_AZURE_59; access still needs an Entra token and a data role.
  #checkov:skip=CKV2_AZURE_33:Private endpoint: optional hardening with VNet integration, documented in docs/deploy.md.
  #checkov:skip=CKV2_AZURE_1:Customer-managed keys: the account holds a package and sync checkpoints, no personal data beyond what the directories publish; Microsoft-managed keys apply.
  #checkov:skip=CKV_AZURE_206:Replication is the operator's choice (storage_replication_type); LRS is the cheap default for rebuildable state.
  name                             = local.names.storage
  resource_group_name              = data.azurerm_resource_group.galbridge.name
  location                         = local.location
  account_kind                     = "StorageV2"
  account_tier                     = "Standard"
  account_replication_type         = var.storage_replication_type
  shared_access_key_enabled        = false
  default_to_oauth_authentication  = true
  allow_nested_items_to_be_public  = false
  cross_tenant_replication_enabled = false
  https_traffic_only_enabled       = true
  min_tls_version                  = "TLS1_2"
  public_network_access_enabled    = true
  tags                             = var.tags

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }

  network_rules {
    default_action = "Allow"
    bypass         = ["AzureServices"]
  }
}

resource "azurerm_storage_container" "deployment" {
  #checkov:skip=CKV2_AZURE_21:Blob read logging for one deployment container adds cost and no audit value; deployments are in the activity log.
  name                  = var.deployment_container_name
  storage_account_id    = azurerm_storage_account.galbridge.id
  container_access_type = "private"
}

# Created here so the binary never needs the right to create tables.
resource "azurerm_storage_table" "state" {
  #checkov:skip=CKV2_AZURE_20:Table read logging through azurerm_log_analytics_storage_insights needs a storage account key, and shared keys are disabled on this account.
  name               = var.state_table_name
  storage_account_id = azurerm_storage_account.galbridge.id
}

# The shard queue of sharded phones runs and its poison queue (docs/microsoft-facts.md §13), created
# here (through the resource manager, storage_account_id) so neither galbridge nor the host needs the
# right to create queues.
resource "azurerm_storage_queue" "shards" {
  name               = local.shard_queue_name
  storage_account_id = azurerm_storage_account.galbridge.id
}

resource "azurerm_storage_queue" "shards_poison" {
  name               = "${local.shard_queue_name}-poison"
  storage_account_id = azurerm_storage_account.galbridge.id
}

# Key Vault for the tenants' app credentials: RBAC only, soft delete + purge protection, audited.
resource "azurerm_key_vault" "galbridge" {
  #checkov:skip=CKV_AZURE_109:Default network action Allow: Flex Consumption without VNet integration has no fixed outbound addresses and is not a trusted Microsoft service (docs/deploy.md "Network hardening").
  #checkov:skip=CKV_AZURE_189:Public network access stays on for the same reason as CKV_AZURE_109; every read needs an Entra token and the Key Vault Secrets User role.
  #checkov:skip=CKV2_AZURE_32:Private endpoint: optional hardening with VNet integration, documented in docs/deploy.md.
  name                       = local.names.key_vault
  resource_group_name        = data.azurerm_resource_group.galbridge.name
  location                   = local.location
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  sku_name                   = "standard"
  enable_rbac_authorization  = true
  soft_delete_retention_days = var.key_vault_soft_delete_retention_days
  purge_protection_enabled   = true
  tags                       = var.tags

  network_acls {
    default_action = "Allow"
    bypass         = "AzureServices"
  }
}

resource "azurerm_monitor_diagnostic_setting" "key_vault_audit" {
  name                       = "audit-to-log-analytics"
  target_resource_id         = azurerm_key_vault.galbridge.id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.galbridge.id

  enabled_log {
    category_group = "audit"
  }
}
