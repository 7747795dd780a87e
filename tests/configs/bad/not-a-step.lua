local mb = require "moonbot"
return {
  workers = { mb.worker { name = "w" } },
  builders = {
    mb.builder {
      name = "b",
      workernames = { "w" },
      steps = {
        mb.steps.shell { command = "make", colour = "blue" },
        mb.worker { name = "oops" },
        mb.steps.mkdir {},
      },
    },
  },
}
--[[ expected errors:
master.lua:9: builder 'b': step: unknown field 'colour'
master.lua:10: builder 'b': steps: expected a step (mb.steps.*{…}), got a worker
master.lua:11: builder 'b': step: 'dir' is required
]]
