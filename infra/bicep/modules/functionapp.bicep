// The Flex Consumption (FC1) plan and the function app running galbridge as a custom handler
// (`runtime: custom 1.0`, docs/microsoft-facts.md §7), with the user-assigned identity for everything:
// host storage, the deployment container, Key Vault, Table Storage and Application Insights.
//
// Flex Consumption quirk (docs/microsoft-facts.md §9): FUNCTIONS_WORKER_RUNTIME and
// WEBSITE_RUN_FROM_PACKAGE must not be set; the runtime and the package location live in
// `functionAppConfig` instead.

@description('Azure region.')
param location string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Name of the function app. Its host name is not always {name}.azurewebsites.net (apps may get a unique default host name): read it from the defaultHostName output.')
param functionAppName string

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('Client id of the user-assigned managed identity.')
param identityClientId string

@description('Name of the storage account (host storage, deployment container, state table).')
param storageAccountName string

@description('Primary blob endpoint of the storage account, with its trailing slash.')
param blobEndpoint string

@description('Deployment container name.')
param deploymentContainerName string

@description('Application Insights connection string (no key is used: local auth is off).')
param appInsightsConnectionString string

@description('Key Vault URI, e.g. https://kv-galbridge.vault.azure.net/.')
param keyVaultUri string

@description('Table endpoint, e.g. https://{account}.table.core.windows.net.')
param stateTableEndpoint string

@description('Name of the state table.')
param stateTableName string

@description('Queue service endpoint of the storage account (GALBRIDGE_QUEUE__queueServiceUri, for the PhonesShard trigger and galbridge).')
param queueEndpoint string

@description('Path of the operator configuration inside the package.')
param configPath string

@description('6-field NCRONTAB schedule of the sync timer, in UTC.')
param schedule string

@description('Most instances the app may scale out to (40-1000 on Flex Consumption, see main.bicep).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int

@description('Memory of each instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@description('Tags for every resource.')
param tags object

// The settings galbridge and the Functions host read. Kept as one object so the Bicep/Terraform
// parity check (infra/check_parity.py) can read the names.
var appSettings = {
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  AZURE_CLIENT_ID: identityClientId
  // The name galbridge's configuration loader reads for the identity to use (src/config/mod.rs).
  GALBRIDGE_MANAGED_IDENTITY_CLIENT_ID: identityClientId
  GALBRIDGE_CONFIG: configPath
  GALBRIDGE_SCHEDULE: schedule
  GALBRIDGE_KEY_VAULT_URL: keyVaultUri
  GALBRIDGE_STATE_TABLE_ENDPOINT: stateTableEndpoint
  GALBRIDGE_STATE_TABLE_NAME: stateTableName
  // The identity-based connection GALBRIDGE_QUEUE: the PhonesShard queue trigger's `connection`, and
  // where galbridge sends shards (src/config/mod.rs reads the same three).
  GALBRIDGE_QUEUE__queueServiceUri: queueEndpoint
  GALBRIDGE_QUEUE__credential: 'managedidentity'
  GALBRIDGE_QUEUE__clientId: identityClientId
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Zone redundancy is not offered for Flex Consumption in every region; a zone outage delays a sync to the next schedule, and the lease plus checkpoints make the retry safe.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Public network access stays on: operators call POST /api/sync with a function key, and Microsoft Graph delivers change notifications to /api/notify when they are on; use a private endpoint with VNet integration if required (docs/deploy.md "Network hardening").
  // checkov:skip=CKV_AZURE_17: No client certificates: SyncHttp and Status are protected by function keys (authLevel function) and called by operators' scripts; Notify is anonymous because Microsoft Graph cannot present a key or a certificate, and each notification is checked against its subscription's clientState instead.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero; a timer-driven sync needs no always-ready instances, and a missed run is caught up by the next one.
  // checkov:skip=CKV_AZURE_213: App Service health checks do not apply to Flex Consumption apps (no always-on instances to probe); Status reports each link's health.
  // checkov:skip=CKV_AZURE_78: FTP is off through the `ftp` basicPublishingCredentialsPolicies (allow: false) below; the check looks for siteConfig.ftpsState, which ARM rejects on Flex Consumption sites (Azure/azure-cli#31414).
  name: functionAppName
  location: location
  // The azd convention for a service's deployment target (azure.yaml deploys through its hook today).
  tags: union(tags, { 'azd-service-name': 'galbridge' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      // No ftpsState (nor use32BitWorkerProcess, netFrameworkVersion, preWarmedInstanceCount,
      // functionAppScaleLimit, functionsRuntimeScaleMonitoringEnabled): ARM rejects them on Flex
      // Consumption sites ("The following site configuration properties (Site.SiteConfig.FtpsState, …)
      // for Flex Consumption sites is invalid"; https://github.com/Azure/azure-cli/issues/31414,
      // https://github.com/microsoft/azure-pipelines-tasks/issues/21032). FTP stays off through the
      // `ftp` basicPublishingCredentialsPolicies below. infra/check_flex_policy.py keeps them out.
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      appSettings: [for setting in items(appSettings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }
}

// No publishing passwords: deployments authenticate with Entra ID (azure/login, az, azd).
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

output functionAppName string = site.name
output defaultHostName string = site.properties.defaultHostName
