-- Streams through handle calls: the callee returns serve.stream; the caller
-- iterates resp:chunks() as they arrive, or takes resp:result() joined.
local serve = require("actorserve")

local Gen = serve.deployment{ name = "Gen", ray_actor_options = { num_cpus = 0 } }
function Gen:count(n)
  return serve.stream(function(write)
    for i = 1, n do write(tostring(i) .. ";"); serve.sleep(0.02) end
  end)
end
function Gen:broken()
  return serve.stream(function(write) write("a;"); error("boom in the stream") end)
end
function Gen:plain() return "plain" end

local Front = serve.deployment{ name = "Front", ray_actor_options = { num_cpus = 0 } }
function Front:init(g) self.g = g end
function Front:__call(req)
  if req.path == "/relay" then
    return serve.stream(function(write)
      for chunk in self.g:count(5):chunks() do write("<" .. chunk .. ">") end
    end)
  end
  if req.path == "/joined" then return self.g:count(4):result() end
  if req.path == "/plain" then
    local got = {}
    for c in self.g:plain():chunks() do got[#got + 1] = c end
    return got
  end
  if req.path == "/broken" then
    local ok, err = pcall(function() return self.g:broken():result() end)
    return { ok = ok, err = tostring(err) }
  end
  return "?"
end

app = Front:bind(Gen:bind())
