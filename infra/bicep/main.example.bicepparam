// Example parameters for main.bicep. Copy to main.bicepparam (ignored by git is up to you), adjust, then:
//   az deployment group create -g rg-galbridge -f infra/bicep/main.bicep -p infra/bicep/main.bicepparam
using 'main.bicep'

param location = 'westeurope'
param baseName = 'galbridge'
// Keep the suffix once chosen: it is part of the storage, Key Vault and function app names.
param nameSuffix = 'ctso01'
param schedule = '0 */15 * * * *'
param configPath = 'galbridge.toml'
param stateTableName = 'galbridge'
param storageSkuName = 'Standard_ZRS'
param maximumInstanceCount = 40
param instanceMemoryMB = 2048
param logRetentionInDays = 30
// Your Entra object id (az ad signed-in-user show --query id -o tsv) so you can store credentials.
param operatorPrincipalId = '00000000-0000-0000-0000-000000000000'
param operatorPrincipalType = 'User'
param tags = {
  application: 'galbridge'
  owner: 'it-operations'
}
