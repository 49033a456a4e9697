output "resource_group" {
  description = "Resource group of the deployment."
  value       = data.azurerm_resource_group.galbridge.name
}

output "function_app_name" {
  description = "Name of the function app (deploy target)."
  value       = azurerm_function_app_flex_consumption.galbridge.name
}

output "function_app_url" {
  description = "Base URL of the HTTP functions (POST /api/sync, GET /api/status)."
  value       = "https://${azurerm_function_app_flex_consumption.galbridge.default_hostname}"
}

output "key_vault_name" {
  description = "Key Vault name: store tenant credentials here."
  value       = azurerm_key_vault.galbridge.name
}

output "key_vault_uri" {
  description = "Key Vault URI (GALBRIDGE_KEY_VAULT_URL)."
  value       = azurerm_key_vault.galbridge.vault_uri
}

output "identity_client_id" {
  description = "Client id of the user-assigned identity (AZURE_CLIENT_ID)."
  value       = azurerm_user_assigned_identity.galbridge.client_id
}

output "identity_principal_id" {
  description = "Principal id of the user-assigned identity: the subject of federated credentials for secretless tenants."
  value       = azurerm_user_assigned_identity.galbridge.principal_id
}

output "storage_account_name" {
  description = "Storage account holding host storage, the deployment container and the state table."
  value       = azurerm_storage_account.galbridge.name
}

output "state_table_endpoint" {
  description = "Table endpoint (GALBRIDGE_STATE_TABLE_ENDPOINT)."
  value       = local.state_table_endpoint
}

output "shard_queue_endpoint" {
  description = "Queue endpoint (GALBRIDGE_QUEUE__queueServiceUri) of the shard queue PhonesShard consumes."
  value       = local.queue_endpoint
}

output "shard_queue_name" {
  description = "Name of the shard queue; failed shards end in <name>-poison."
  value       = azurerm_storage_queue.shards.name
}
