-- The body every aienv kind shares. The kind's prelude above defines:
--   terminal: Ready=False reasons that only a change of the spec (or of what it names) fixes
--   gates:    other condition types whose False means the object is failing at its job
--   suspendable: whether spec.suspend pauses the object
local function degraded(msg) return {status = "Degraded", message = msg} end
local function progressing(msg) return {status = "Progressing", message = msg} end

local function describe(c)
  local text = c.reason or c.type
  if c.message ~= nil and c.message ~= "" then text = text .. ": " .. c.message end
  return text
end

if obj.status == nil then
  return progressing("Waiting for the aienv operator to report status")
end
local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  return progressing("Waiting for the aienv operator to observe generation " .. generation)
end
if suspendable and obj.spec ~= nil and obj.spec.suspend == true then
  return {status = "Suspended", message = "spec.suspend is true"}
end

local ready = nil
for _, c in ipairs(obj.status.conditions or {}) do
  if c.type == "Stalled" and c.status == "True" then
    return degraded(describe(c))
  end
  if c.type == "Ready" then ready = c end
end
for _, c in ipairs(obj.status.conditions or {}) do
  if gates[c.type] and c.status == "False" then
    return degraded(describe(c))
  end
end
if ready == nil then
  return progressing("Waiting for the Ready condition")
end
if ready.status == "True" then
  return {status = "Healthy", message = ready.message or "Ready"}
end
if ready.status == "False" and ready.reason ~= nil and terminal[ready.reason] then
  return degraded(describe(ready))
end
return progressing(describe(ready))
