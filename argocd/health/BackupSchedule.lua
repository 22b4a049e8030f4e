local suspendable = true
local gates = {LastBackupSucceeded = true, LastVerifySucceeded = true}
local terminal = {
  InvalidSpec = true, InvalidSchedule = true, InvalidTimeZone = true, ChildConflict = true,
  CredentialsNotFound = true, CredentialsKeyMissing = true, RejectedByKubernetes = true,
}
