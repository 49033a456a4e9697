// Key Vault for the tenants' app credentials (client secrets, certificates). Access is Azure RBAC
// only (no access policies); soft delete and purge protection keep a deleted credential
// recoverable; every read is audited to Log Analytics.

@description('Azure region.')
param location string

@description('Key Vault name (3-24 characters, globally unique).')
@minLength(3)
@maxLength(24)
param keyVaultName string

@description('Days a deleted secret or certificate can be recovered (7-90).')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int

@description('Log Analytics workspace receiving the vault\'s audit log.')
param workspaceId string

@description('Tags for every resource.')
param tags object

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: Default network action Allow: Flex Consumption without VNet integration has no fixed outbound addresses and is not a trusted Microsoft service (docs/deploy.md "Network hardening"); every read needs an Entra token and Key Vault Secrets User.
  // checkov:skip=CKV_AZURE_189: Public network access stays on for the same reason as CKV_AZURE_109.
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      // Flex Consumption without VNet integration has no fixed outbound addresses to allow, and the
      // app is not a "trusted Microsoft service": Deny would lock it out. See docs/deploy.md.
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource audit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output keyVaultName string = vault.name
output keyVaultUri string = vault.properties.vaultUri
