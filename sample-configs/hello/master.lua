-- A small master: one local worker, two builders, a force scheduler.
-- `moonbot create-master DIR` starts from this file; `moonbot quickstart` runs it.
local mb = require "moonbot"

return {
  title = "Hello CI",
  www = { port = 8010, bind = "127.0.0.1" },
  protocols = { quic = { port = 9989, bind = "0.0.0.0" } },
  db = { url = "sqlite:state.sqlite" },

  workers = {
    mb.worker { name = "local-1", max_builds = 2 },
  },

  builders = {
    mb.builder {
      name = "hello",
      workernames = { "local-1" },
      steps = {
        mb.steps.shell { name = "greet", command = { "echo", "hello" } },
        mb.steps.shell {
          name = "system",
          command = "uname -a && echo \"building on $(hostname) with $CC\"",
          env = { CC = "cc" },
          timeout = 60,
        },
      },
    },
    mb.builder {
      name = "lua-rendered",
      description = "a step whose command is computed by Lua when the build runs",
      workernames = { "local-1" },
      steps = {
        mb.steps.mkdir { dir = "out" },
        mb.steps.shell {
          name = "whoami",
          command = function(props)
            return { "echo", "build " .. props.buildnumber .. " of " .. props.buildername }
          end,
        },
        mb.steps.shell {
          command = mb.interpolate("echo forced by %(prop:owner:-nobody)s"),
          halt_on_failure = true,
        },
      },
    },
  },

  schedulers = {
    mb.schedulers.force { name = "force", builders = { "hello", "lua-rendered" } },
  },
}
