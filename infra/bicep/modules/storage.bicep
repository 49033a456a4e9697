// The function app's storage account: shared-key access disabled (identity only), no public blobs,
// TLS 1.2. It holds the Functions host's own containers (created by the host), the deployment
// container Flex Consumption reads the package from, galbridge's state table, and the shard queue of
// sharded phones runs with its poison queue (docs/microsoft-facts.md §13).

@description('Azure region.')
param location string

@description('Storage account name (3-24 lowercase letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param storageAccountName string

@description('Storage redundancy.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string

@description('Blob container Flex Consumption deploys the package into.')
param deploymentContainerName string

@description('Table holding galbridge\'s sync state (checkpoints, leases, run records).')
param stateTableName string

@description('Queue the PhonesShard function consumes (its function.json queueName); the host moves failed messages to <name>-poison.')
param shardQueueName string

@description('Tags for every resource.')
param tags object

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Default network action Allow: Flex Consumption without VNet integration reaches storage from shared outbound addresses (docs/deploy.md "Network hardening"); every request still needs an Entra token and a data role.
  // checkov:skip=CKV_AZURE_59: Public network access stays on for the same reason as CKV_AZURE_35.
  // checkov:skip=CKV_AZURE_206: Replication is the operator's choice (storageSkuName); LRS is the cheap default for state a full resync rebuilds.
  // checkov:skip=CKV_AZURE_43: The name is built in main.bicep from validated parameters (lowercase letters and digits, at most 20 characters); checkov cannot evaluate it here.
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    // No account keys: the host, the deployment and galbridge all use the managed identity.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      // Flex Consumption without VNet integration reaches storage from shared outbound addresses;
      // a Deny default would lock the app out. See docs/deploy.md "Network hardening".
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource stateTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: stateTableName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// Created here, with its poison queue, so neither galbridge nor the host needs the right to create queues.
resource shardQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: shardQueueName
}

resource shardPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: '${shardQueueName}-poison'
}

output storageAccountName string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
// Without the trailing slash, as GALBRIDGE_STATE_TABLE_ENDPOINT expects.
output tableEndpoint string = 'https://${storage.name}.table.${environment().suffixes.storage}'
output deploymentContainerName string = deploymentContainer.name
output stateTableName string = stateTable.name
// Without the trailing slash, as GALBRIDGE_QUEUE__queueServiceUri is written.
output queueEndpoint string = 'https://${storage.name}.queue.${environment().suffixes.storage}'
output shardQueueName string = shardQueue.name
output shardPoisonQueueName string = shardPoisonQueue.name
