local suspendable = false
local gates = {}
local terminal = {
  InvalidSpec = true, InvalidConnectionSecret = true, CredentialsInvalid = true,
  ChildConflict = true, SecretConflict = true, CloudNativePGNotInstalled = true,
  IndexBuildFailed = true,
}
