# galbridge on Azure Functions Flex Consumption, the Terraform twin of infra/bicep/main.bicep.
# infra/check_parity.py checks that both declare the same app settings and role assignments.

terraform {
  required_version = ">= 1.6.0"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # 4.55 or later 4.x: azurerm_function_app_flex_consumption with runtime_name = "custom",
      # storage_account_id on containers and tables.
      #
      # Deprecations (issue 16, checked against the provider source at v4.55.0, v4.81.0 (the newest
      # 4.x) and v5.2.0): none of the storage_container_type, storage_container_endpoint,
      # storage_authentication_type or storage_user_assigned_identity_id arguments of
      # azurerm_function_app_flex_consumption is marked deprecated, and no successor exists yet.
      # The planned `backend_storage` / `deployment_storage` blocks are still an open pull request
      # (https://github.com/hashicorp/terraform-provider-azurerm/pull/29099); move to them, and drop
      # the azapi workaround in functionapp.tf, once a release ships them.
      version = "~> 4.55"
    }
    azapi = {
      source = "Azure/azapi"
      # azapi_resource_action with method = "PUT" (functionapp.tf: the AzureWebJobsStorage workaround).
      version = "~> 2.0"
    }
  }
}

provider "azurerm" {
  features {
    key_vault {
      # Purge protection is on: a destroyed vault stays soft-deleted; never purge it from here.
      purge_soft_delete_on_destroy = false
    }
    storage {
      # With shared keys off, azurerm 4.x reads the account's queue (and static website) properties
      # over the storage data plane, and the deploying identity gets 403 AuthorizationPermissionMismatch
      # "retrieving queue properties for Storage Account" unless it holds a queue data role
      # (https://github.com/hashicorp/terraform-provider-azurerm/issues/27752, #29984). galbridge uses
      # neither queue_properties nor static_website, the case this flag is documented for (features
      # block guide, `storage.data_plane_available`), so the provider skips those calls. The shard
      # queues (main.tf) are created with storage_account_id, through the resource manager, not the
      # data plane. docs/deploy.md
      # "Bootstrap" covers the role to grant if you turn it back on.
      data_plane_available = false
    }
  }
  # Shared-key access is disabled on the storage account: the provider must use Entra ID for
  # every data-plane call it makes.
  storage_use_azuread = true
}

# Same credentials as azurerm (az login locally; ARM_USE_OIDC and ARM_* in the GitHub workflow).
provider "azapi" {}
