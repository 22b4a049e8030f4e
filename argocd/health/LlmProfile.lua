local suspendable = false
local gates = {}
local terminal = {
  InvalidSpec = true, InvalidCA = true, InvalidEnv = true, InvalidHeader = true,
  OpenAIBaseUnversioned = true, NoEndpoint = true, CredentialsInvalid = true,
  SecretNotFound = true, SecretNotAllowed = true, SecretKeyNotFound = true,
  SecretKeyEmpty = true, SecretKeyInvalid = true,
}
