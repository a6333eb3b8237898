-- Argo CD health check for studio.cms.io/StudioCluster. Install it in argocd-cm as
--   resource.customizations.health.studio.cms.io_StudioCluster: |
--     <this file>
-- (see README "GitOps health"). It reads what the operator writes: observedGeneration,
-- phase and the conditions Stalled, Ready, Degraded (the same ones kstatus reads).
local hs = { status = "Progressing", message = "Waiting for the operator" }
if obj.status == nil then
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local conditions = {}
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    conditions[c.type] = c
  end
end
local function is_true(t)
  return conditions[t] ~= nil and conditions[t].status == "True"
end
local function message_of(t)
  if conditions[t] ~= nil and conditions[t].message ~= nil and conditions[t].message ~= "" then
    return conditions[t].message
  end
  return obj.status.message or ""
end
if obj.status.phase == "Paused" then
  hs.status = "Suspended"
  hs.message = "spec.paused is set: the operator does not reconcile"
  return hs
end
if is_true("Stalled") then
  hs.status = "Degraded"
  hs.message = message_of("Stalled")
  return hs
end
if is_true("Ready") then
  hs.status = "Healthy"
  hs.message = message_of("Ready")
  return hs
end
if is_true("Degraded") then
  hs.status = "Degraded"
  hs.message = message_of("Degraded")
  return hs
end
hs.status = "Progressing"
hs.message = obj.status.message or ""
return hs
