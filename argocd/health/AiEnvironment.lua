local suspendable = true
local gates = {}
local terminal = {
  InvalidSpec = true, HarnessUnsupported = true, SelectorEmpty = true, SelectorInvalid = true,
  SecretConflict = true, SecretKeyInvalid = true, NetworkPolicyConflict = true,
  PrimaryCredentialsInvalid = true, CanaryTimedOut = true,
}
