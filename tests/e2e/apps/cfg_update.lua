-- Updates under load. The tests copy this file and rewrite VERSION for a code change.
-- The constructor waits a little so that a rolling update can be watched.
local serve = require("actorserve")

local VERSION = "v1"

local U = serve.deployment{
  name = "U",
  num_replicas = 2,
  max_ongoing_requests = 5,
  ray_actor_options = { num_cpus = 0 },
  user_config = { greeting = "hello" },
}

function U:init(tag)
  self.tag = tag or "main"
  self.reconf = 0
  serve.sleep(0.3)
end

function U:reconfigure(cfg)
  self.greeting = cfg.greeting
  self.reconf = self.reconf + 1
end

function U:__call(req)
  serve.sleep(0.005)
  local c = serve.get_replica_context()
  return {
    version = VERSION,
    tag = self.tag,
    greeting = self.greeting,
    reconf = self.reconf,
    pid = c.pid,
    replica_id = c.replica_id,
    app = c.app_name,
  }
end

app = U:bind("main")
other = U:options{ name = "Other" }:bind("other")
