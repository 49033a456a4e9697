// Least-privilege data-plane roles for galbridge's user-assigned identity (and, optionally, for the
// operator who stores the tenants' credentials). Role ids: docs/microsoft-facts.md §9. Every assignment
// here has its twin in infra/terraform/roles.tf; infra/check_parity.py compares them.

@description('Principal (object) id of the function app\'s user-assigned identity.')
param identityPrincipalId string

@description('Principal id of the operator (user or group) who writes tenant credentials into Key Vault; empty for none.')
param operatorPrincipalId string

@description('Principal type of the operator principal.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string

@description('Storage account holding host storage, the deployment container and the state table.')
param storageAccountName string

@description('Table holding galbridge\'s sync state: the only table the identity may read and write.')
param stateTableName string

@description('Queue of phones-run shards: galbridge sends to it, the PhonesShard trigger consumes it.')
param shardQueueName string

@description('Poison queue of the shard queue: the host moves failed shards there, galbridge peeks at them for status.')
param shardPoisonQueueName string

@description('Key Vault holding the tenants\' credentials.')
param keyVaultName string

@description('Application Insights component receiving the app\'s telemetry.')
param appInsightsName string

var roleIds = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  keyVaultCertificatesOfficer: 'a4417e6f-fecd-4de8-b567-7b0420556985'
  storageQueueDataReader: '19e7f393-937e-4f77-808e-94535e297925'
  storageQueueDataMessageProcessor: '8a0f0c08-91a1-4084-bc3d-661d67233fed'
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource stateTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: stateTableName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource shardQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: shardQueueName
}

resource shardPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: shardPoisonQueueName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// The Functions host creates and uses its own containers (azure-webjobs-hosts for timer locks,
// azure-webjobs-secrets for function keys) and Flex Consumption reads the package from the
// deployment container: blob access on this account, which holds nothing else galbridge's.
resource appBlobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identityPrincipalId, roleIds.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataOwner)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// galbridge's state: only its own table, nothing else in the account's table service.
// The table is created here, so the binary never needs to create tables.
resource appTableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stateTable.id, identityPrincipalId, roleIds.storageTableDataContributor)
  scope: stateTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageTableDataContributor)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The shard queue (docs/microsoft-facts.md §13): galbridge sends shards (Sender); the host's queue
// trigger peeks, takes, releases and deletes them (Reader + Message Processor, the trigger's documented
// pair); after maxDequeueCount the host adds the message to the poison queue (Sender there), which
// galbridge peeks for `status` (Reader there). Both queues are created above, so no one needs
// Storage Queue Data Contributor.
resource appShardQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(shardQueue.id, identityPrincipalId, roleIds.storageQueueDataMessageSender)
  scope: shardQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageQueueDataMessageSender)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appShardQueueProcessor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(shardQueue.id, identityPrincipalId, roleIds.storageQueueDataMessageProcessor)
  scope: shardQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageQueueDataMessageProcessor)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appShardQueueReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(shardQueue.id, identityPrincipalId, roleIds.storageQueueDataReader)
  scope: shardQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageQueueDataReader)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appShardPoisonSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(shardPoisonQueue.id, identityPrincipalId, roleIds.storageQueueDataMessageSender)
  scope: shardPoisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageQueueDataMessageSender)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appShardPoisonReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(shardPoisonQueue.id, identityPrincipalId, roleIds.storageQueueDataReader)
  scope: shardPoisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageQueueDataReader)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Read secrets, including the private key of a certificate (read through the secrets endpoint).
resource appKeyVaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identityPrincipalId, roleIds.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultSecretsUser)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Entra-authenticated telemetry ingestion (local auth is off on the component).
resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identityPrincipalId, roleIds.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.monitoringMetricsPublisher)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The operator stores client secrets and imports certificates; galbridge itself never writes.
resource operatorSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, operatorPrincipalId, roleIds.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultSecretsOfficer)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorCertificatesOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, operatorPrincipalId, roleIds.keyVaultCertificatesOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultCertificatesOfficer)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}
