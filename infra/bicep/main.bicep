// galbridge on Azure Functions Flex Consumption: the whole deployment in one resource group.
//
//   az deployment group create -g <rg> -f infra/bicep/main.bicep -p infra/bicep/main.example.bicepparam
//
// Resources: user-assigned identity; storage (shared keys off) with the deployment container and the
// state table; Key Vault (RBAC, soft delete, purge protection); Log Analytics + Application Insights
// (local auth off); the FC1 plan and the function app (custom handler); least-privilege role
// assignments. The same resources in Terraform: infra/terraform/. docs/deploy.md walks through it.

targetScope = 'resourceGroup'

@description('Azure region for every resource. Must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Short name the resource names are built from (lowercase letters and digits, 3-10).')
@minLength(3)
@maxLength(10)
param baseName string = 'galbridge'

@description('Suffix that makes the global names (storage, Key Vault, function app) unique. Keep it stable across deployments.')
@minLength(4)
@maxLength(8)
param nameSuffix string = take(uniqueString(resourceGroup().id), 8)

@description('Sync schedule: 6-field NCRONTAB in UTC (second minute hour day month day-of-week). Sets GALBRIDGE_SCHEDULE.')
param schedule string = '0 */15 * * * *'

@description('Path of the operator configuration inside the package, relative to the app root. Sets GALBRIDGE_CONFIG.')
param configPath string = 'galbridge.toml'

@description('Name of the Table Storage table holding sync state. Sets GALBRIDGE_STATE_TABLE_NAME.')
param stateTableName string = 'galbridge'

@description('Blob container Flex Consumption deploys the package into.')
param deploymentContainerName string = 'app-package'

@description('Storage redundancy.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSkuName string = 'Standard_LRS'

// Flex Consumption accepts 40-1000 (https://learn.microsoft.com/azure/azure-functions/event-driven-scaling#flex-consumption-plan,
// https://github.com/MicrosoftDocs/azure-docs/pull/128255). Values below 40 are a regional preview
// only (https://github.com/Azure/azure-functions-host/issues/10523), although azurerm 4.58+ validates
// 1-1000 (https://github.com/hashicorp/terraform-provider-azurerm/pull/31392): ARM rejects them elsewhere.
@description('Most instances the app may scale out to (40-1000). A sync run holds a per-link lease, so more instances do not mean more parallel writes.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Days Log Analytics keeps data.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

@description('Days a deleted Key Vault secret or certificate stays recoverable.')
@minValue(7)
@maxValue(90)
param keyVaultSoftDeleteRetentionInDays int = 90

@description('Object id of the operator (user, group or service principal) who will store tenant credentials in Key Vault. Empty: assign Key Vault Secrets Officer yourself.')
param operatorPrincipalId string = ''

@description('Type of operatorPrincipalId. azd passes its own principal type (User when signed in as a user, ServicePrincipal in CI) through main.parameters.json.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

@description('Tags for every resource.')
param tags object = {
  application: 'galbridge'
}

var names = {
  identity: 'id-${baseName}-${nameSuffix}'
  storage: toLower('st${baseName}${nameSuffix}')
  keyVault: 'kv-${baseName}-${nameSuffix}'
  workspace: 'log-${baseName}-${nameSuffix}'
  appInsights: 'appi-${baseName}-${nameSuffix}'
  plan: 'plan-${baseName}-${nameSuffix}'
  functionApp: 'func-${baseName}-${nameSuffix}'
}

// The queue functions/PhonesShard/function.json listens to (its queueName is fixed in the package).
var shardQueueName = 'galbridge-phones-shards'


resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: names.identity
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'galbridge-monitoring'
  params: {
    location: location
    workspaceName: names.workspace
    appInsightsName: names.appInsights
    retentionInDays: logRetentionInDays
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'galbridge-storage'
  params: {
    location: location
    storageAccountName: names.storage
    skuName: storageSkuName
    deploymentContainerName: deploymentContainerName
    stateTableName: stateTableName
    shardQueueName: shardQueueName
    tags: tags
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'galbridge-keyvault'
  params: {
    location: location
    keyVaultName: names.keyVault
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
    workspaceId: monitoring.outputs.workspaceId
    tags: tags
  }
}

// Roles first: the host needs blob access the moment it starts.
module roles 'modules/roles.bicep' = {
  name: 'galbridge-roles'
  params: {
    identityPrincipalId: identity.properties.principalId
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
    storageAccountName: storage.outputs.storageAccountName
    stateTableName: storage.outputs.stateTableName
    shardQueueName: storage.outputs.shardQueueName
    shardPoisonQueueName: storage.outputs.shardPoisonQueueName
    keyVaultName: keyVault.outputs.keyVaultName
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'galbridge-functionapp'
  dependsOn: [
    roles
  ]
  params: {
    location: location
    planName: names.plan
    functionAppName: names.functionApp
    identityId: identity.id
    identityClientId: identity.properties.clientId
    storageAccountName: storage.outputs.storageAccountName
    blobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    keyVaultUri: keyVault.outputs.keyVaultUri
    stateTableEndpoint: storage.outputs.tableEndpoint
    stateTableName: storage.outputs.stateTableName
    queueEndpoint: storage.outputs.queueEndpoint
    configPath: configPath
    schedule: schedule
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    tags: tags
  }
}

// Upper-case names so azd stores them in its environment (.azure/<env>/.env) for the deploy hook.
@description('Resource group of the deployment.')
output AZURE_RESOURCE_GROUP string = resourceGroup().name
@description('Name of the function app (deploy target).')
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.functionAppName
@description('Base URL of the HTTP functions (POST /api/sync, GET /api/status), from the site\'s defaultHostName: never build it from the app name.')
output FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostName}'
@description('Key Vault name: store tenant credentials here.')
output KEY_VAULT_NAME string = keyVault.outputs.keyVaultName
@description('Key Vault URI (GALBRIDGE_KEY_VAULT_URL).')
output KEY_VAULT_URI string = keyVault.outputs.keyVaultUri
@description('Client id of the user-assigned identity (AZURE_CLIENT_ID).')
output IDENTITY_CLIENT_ID string = identity.properties.clientId
@description('Principal id of the user-assigned identity: the subject of federated credentials for secretless tenants.')
output IDENTITY_PRINCIPAL_ID string = identity.properties.principalId
@description('Storage account holding host storage, the deployment container and the state table.')
output STORAGE_ACCOUNT_NAME string = storage.outputs.storageAccountName
@description('Table endpoint (GALBRIDGE_STATE_TABLE_ENDPOINT).')
output STATE_TABLE_ENDPOINT string = storage.outputs.tableEndpoint
@description('Queue endpoint (GALBRIDGE_QUEUE__queueServiceUri) and the shard queue PhonesShard consumes.')
output SHARD_QUEUE_ENDPOINT string = storage.outputs.queueEndpoint
@description('Name of the shard queue; failed shards end in <name>-poison.')
output SHARD_QUEUE_NAME string = storage.outputs.shardQueueName
