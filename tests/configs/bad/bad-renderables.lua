local mb = require "moonbot"
return {
  workers = { mb.worker { name = "w" } },
  secrets = { { dir = "plain table" } },
  builders = {
    mb.builder { name = "b", workernames = { "w" }, steps = {
      mb.steps.shell { command = mb.interpolate("make %(prop:target") },
      mb.steps.shell { command = { "echo",
        mb.interpolate("%(kw:missing)s", { other = "x" }) } },
      mb.steps.shell { command = "true", env = { A = mb.interpolate("%(src:branch)s") } },
      mb.steps.shell { command = "true", description = mb.interpolate("%(prop:x:?|only-one)s") },
      mb.steps.shell { command = "true", do_step_if = "yes", decode_rc = { [0] = "ok" } },
      mb.steps.mkdir { dir = mb.interpolate("%(worker:shoesize)s") },
      mb.steps.shell_sequence { commands = {} },
      mb.steps.shell_sequence { commands = { { command = "make", log = "x" }, "ls" } },
      mb.steps.set_property_from_command { command = "date", property = "d", extract_fn = print },
      mb.steps.set_properties { properties = "a=b" },
      mb.steps.master_shell { command = "date" },
    } },
  },
}
--[[ expected errors:
master.lua:4: secrets: expected mb.secrets.files{…} or mb.secrets.env{…}, got a plain table
master.lua:7: builder 'b': step: 'command': interpolate: a '%(' is not closed by ')s' (in "make %(prop:target")
master.lua:9: builder 'b': step: 'command': interpolate: '%(kw:missing)s' names a keyword that was not given (mb.interpolate(template, { missing = … })) (in "%(kw:missing)s")
master.lua:10: builder 'b': step: env 'A': interpolate: 'src:branch' needs an attribute: %(src:CODEBASE:ATTR)s, as %(src::branch)s (in "%(src:branch)s")
master.lua:11: builder 'b': step: 'description': interpolate: ':?|…' needs two alternatives separated by '|' (in "%(prop:x:?|only-one)s")
master.lua:12: builder 'b': step: 'do_step_if' must be a boolean or a function, not a string
master.lua:12: builder 'b': step: 'decode_rc' maps exit codes to results (mb.results.*), not [0] = string
master.lua:13: builder 'b': step: 'dir': interpolate: unknown worker attribute 'shoesize' (known: name, version, os, arch, cpus, hostname, admin, host) (in "%(worker:shoesize)s")
master.lua:14: builder 'b': step: 'commands' must be a non-empty list of { command = … } tables, not an empty one
master.lua:15: builder 'b': step: commands[1]: unknown field 'log'
master.lua:15: builder 'b': step: commands[2] must be a { command = … } table, not a string
master.lua:16: builder 'b': step: give 'property' or 'extract_fn', not both
master.lua:17: builder 'b': step: 'properties' must be a table or a function, not a string
master.lua:18: builder 'b': step 'date': master_shell runs commands on the master; refused unless master.lua sets allow_master_shell = true
]]
