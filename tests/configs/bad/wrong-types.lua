local mb = require "moonbot"
return {
  workers = { mb.worker { name = "w", max_builds = "two" } },
  builders = {
    mb.builder { name = "b", workernames = { "w" }, steps = {
      mb.steps.shell { command = 42, timeout = -1 },
      mb.steps.shell { command = { "make" }, halt_on_failur = true },
      { command = "plain table" },
    } },
  },
}
--[[ expected errors:
master.lua:3: worker: 'max_builds' must be a whole number, not a string
master.lua:6: builder 'b': step: 'command' must be a string, a list, a renderable or a function, not a number
master.lua:6: builder 'b': step: 'timeout' must be between 1 and 604800, not -1
master.lua:7: builder 'b': step: unknown field 'halt_on_failur'
master.lua:5: builder 'b': steps: expected a step (mb.steps.*{…}), got a plain table
]]
