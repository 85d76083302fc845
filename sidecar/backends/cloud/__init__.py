"""The cloud capability: an account (`type: cloud`) that the cloud services build on."""
