# galbridge on Azure Functions Flex Consumption, the Terraform twin of infra/bicep/main.bicep.
# infra/check_parity.py checks that both declare the same app settings and role assignments.

terraform {
  required_version = ">= 1.6.0"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # 4.55 or later 4.x: azurerm_function_app_flex_consumption with runtime_name = "custom",
      # storage_account_id on containers and tables.
      version = "~> 4.55"
    }
  }
}

provider "azurerm" {
  features {
    key_vault {
      # Purge protection is on: a destroyed vault stays soft-deleted; never purge it from here.
      purge_soft_delete_on_destroy = false
    }
  }
  # Shared-key access is disabled on the storage account: the provider must use Entra ID for
  # every data-plane call it makes.
  storage_use_azuread = true
}
