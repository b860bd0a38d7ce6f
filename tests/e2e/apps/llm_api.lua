-- The actorserve.llm Lua API on the model in $AS_TEST_MODEL: tokenize /
-- detokenize, greedy and seeded generation, stream against generate,
-- max_new_tokens, chat.
local serve = require("actorserve")
local llm = require("actorserve.llm")

local L = serve.deployment{ name = "L", ray_actor_options = { num_cpus = 0 } }

function L:init() self.m = llm.load(os.getenv("AS_TEST_MODEL")) end

function L:__call(req)
  local m = self.m
  local ids = m:tokenize("In the beginning God created", false)
  local g1 = m:generate("In the beginning", { max_new_tokens = 12, temperature = 0 })
  local g2 = m:generate("In the beginning", { max_new_tokens = 12, temperature = 0 })
  local s1 = m:generate("And the LORD", { max_new_tokens = 12, temperature = 1.0, seed = 7 })
  local s2 = m:generate("And the LORD", { max_new_tokens = 12, temperature = 1.0, seed = 7 })
  local parts = {}
  for piece in m:stream("In the beginning", { max_new_tokens = 12, temperature = 0 }) do parts[#parts + 1] = piece end
  local _, info = m:generate("And", { max_new_tokens = 3, temperature = 0 })
  return {
    ids = ids,
    roundtrip = m:detokenize(ids),
    greedy_same = g1 == g2,
    seeded_same = s1 == s2,
    stream_joined_equals_generate = table.concat(parts) == g1,
    short_tokens = info.completion_tokens,
    chat = m:chat({ { role = "user", content = "Who was Noah?" } }, { max_new_tokens = 8 }),
  }
end

app = L:bind()
