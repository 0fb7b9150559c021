# The Vault policy of the service: its KV paths and the capability check, nothing else.
path "secret/data/auth0/clients/*"      { capabilities = ["create", "update", "read"] }
path "secret/metadata/auth0/clients/*"  { capabilities = ["read"] }
path "secret/data/secret-rotator/*"     { capabilities = ["create", "update", "read"] }
path "secret/metadata/secret-rotator/*" { capabilities = ["read", "list"] }
path "sys/capabilities-self"            { capabilities = ["update"] }
