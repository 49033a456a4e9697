# Least-privilege data-plane roles for galbridge's user-assigned identity (and, optionally, for the
# operator who stores tenant credentials). Twin of infra/bicep/modules/roles.bicep; role ids from
# docs/microsoft-facts.md §9.

locals {
  role_definition_prefix = "/subscriptions/${data.azurerm_client_config.current.subscription_id}/providers/Microsoft.Authorization/roleDefinitions"
  role_ids = {
    storage_blob_data_owner              = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
    storage_table_data_contributor       = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
    key_vault_secrets_user               = "4633458b-17de-408a-b874-0445c86b69e6"
    monitoring_metrics_publisher         = "3913510d-42f4-4e42-8a64-420c390055eb"
    key_vault_secrets_officer            = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
    key_vault_certificates_officer       = "a4417e6f-fecd-4de8-b567-7b0420556985"
    storage_queue_data_reader            = "19e7f393-937e-4f77-808e-94535e297925"
    storage_queue_data_message_processor = "8a0f0c08-91a1-4084-bc3d-661d67233fed"
    storage_queue_data_message_sender    = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"
  }
}

# The Functions host creates and uses its own containers (azure-webjobs-hosts for timer locks,
# azure-webjobs-secrets for function keys) and Flex Consumption reads the package from the
# deployment container: blob access on this account, which holds nothing else.
resource "azurerm_role_assignment" "app_blob_data_owner" {
  scope              = azurerm_storage_account.galbridge.id
  role_definition_id = "${local.role_definition_prefix}/${local.role_ids.storage_blob_data_owner}"
  principal_id       = azurerm_user_assigned_identity.galbridge.principal_id
  principal_type     = "ServicePrincipal"
}

# galbridge's state: only its own table.
resource "azurerm_role_assignment" "app_table_data_contributor" {
  scope              = azurerm_storage_table.state.resource_manager_id
  role_definition_id = "${local.role_definition_prefix}/${local.role_ids.storage_table_data_contributor}"
  principal_id       = azurerm_user_assigned_identity.galbridge.principal_id
  principal_type     = "ServicePrincipal"
}

# The shard queue (docs/microsoft-facts.md §13): galbridge sends shards (Sender); the host's queue
# trigger peeks, takes, releases and deletes them (Reader + Message Processor); after maxDequeueCount
# the host adds the message to the poison queue (Sender there), which galbridge peeks for `status`
# (Reader there). Both queues are created in main.tf: no one needs Storage Queue Data Contributor.
resource "azurerm_role_assignment" "app_shard_queue_sender" {
  scope              = azurerm_storage_queue.shards.resource_manager_id
  role_definition_id = "${local.role_definition_prefix}/${local.role_ids.storage_queue_data_message_sender}"
  principal_id       = azurerm_user_assigned_identity.galbridge.principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "app_shard_queue_processor" {
  scope              = azurerm_storage_queue.shards.resource_manager_id
  role_definition_id = "${local.role_definition_prefix}/${local.role_ids.storage_queue_data_message_processor}"
  principal_id       = azurerm_user_assigned_identity.galbridge.principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "app_shard_queue_reader" {
  scope              = azurerm_storage_queue.shards.resource_manager_id
  role_definition_id = "${local.role_definition_prefix}/${local.role_ids.storage_queue_data_reader}"
  principal_id       = azurerm_user_assigned_identity.galbridge.principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "app_shard_poison_sender" {
  scope              = azurerm_storage_queue.shards_poison.resource_manager_id
  role_definition_id = "${local.role_definition_prefix}/${local.role_ids.storage_queue_data_message_sender}"
  principal_id       = azurerm_user_assigned_identity.galbridge.principal_id
  principal_type     = "ServicePrincipal"
}

resource "azurerm_role_assignment" "app_shard_poison_reader" {
  scope              = azurerm_storage_queue.shards_poison.resource_manager_id
  role_definition_id = "${local.role_definition_prefix}/${local.role_ids.storage_queue_data_reader}"
  principal_id       = azurerm_user_assigned_identity.galbridge.principal_id
  principal_type     = "ServicePrincipal"
}

# Read secrets, including a certificate's private key (read through the secrets endpoint).
resource "azurerm_role_assignment" "app_key_vault_secrets_user" {
  scope              = azurerm_key_vault.galbridge.id
  role_definition_id = "${local.role_definition_prefix}/${local.role_ids.key_vault_secrets_user}"
  principal_id       = azurerm_user_assigned_identity.galbridge.principal_id
  principal_type     = "ServicePrincipal"
}

# Entra-authenticated telemetry ingestion (local auth is off on the component).
resource "azurerm_role_assignment" "app_metrics_publisher" {
  scope              = azurerm_application_insights.galbridge.id
  role_definition_id = "${local.role_definition_prefix}/${local.role_ids.monitoring_metrics_publisher}"
  principal_id       = azurerm_user_assigned_identity.galbridge.principal_id
  principal_type     = "ServicePrincipal"
}

# The operator stores client secrets and imports certificates; galbridge itself never writes.
resource "azurerm_role_assignment" "operator_secrets_officer" {
  count              = var.operator_principal_id != "" ? 1 : 0
  scope              = azurerm_key_vault.galbridge.id
  role_definition_id = "${local.role_definition_prefix}/${local.role_ids.key_vault_secrets_officer}"
  principal_id       = var.operator_principal_id
  principal_type     = var.operator_principal_type
}

resource "azurerm_role_assignment" "operator_certificates_officer" {
  count              = var.operator_principal_id != "" ? 1 : 0
  scope              = azurerm_key_vault.galbridge.id
  role_definition_id = "${local.role_definition_prefix}/${local.role_ids.key_vault_certificates_officer}"
  principal_id       = var.operator_principal_id
  principal_type     = var.operator_principal_type
}
