-- A multi-branch, multi-platform project, the way large Buildbot
-- installations are written: one builder per branch and platform, made by
-- loops, with Buildbot-style names ("AMD64 Debian main"). Each builder checks
-- out the pushed revision with the git step, configures (except on Windows),
-- compiles and runs the repository's ./run-tests, whose exit code 5 means
-- "passed with warnings" (decode_rc), and the docs are built on main only (do_step_if).
-- A push to a branch builds it on every platform; the force form builds any
-- builder at a branch or revision. Point `repo` at your repository (a path
-- works too) and run one worker per platform.
local mb = require "moonbot"

local repo = "https://git.example.org/project.git"

local branches = { "main", "3.13", "3.12" }

local platforms = {
  { name = "AMD64 Debian", worker = "debian-amd64", make = { "make", "-j4" } },
  { name = "ARM64 macOS", worker = "macos-arm64", make = { "make", "-j8" } },
  { name = "x86/64 Windows", worker = "windows-x64", make = { "nmake" }, windows = true },
}

local function steps_for(platform)
  return {
    mb.steps.git { repourl = repo, mode = "full", method = "fresh", retry_fetch = true },
    -- A hole when the platform has no configure step: skipped, in order.
    (not platform.windows) and mb.steps.shell {
      name = "configure",
      command = { "./configure", mb.interpolate("--prefix=%(prop:builddir)s/install") },
      halt_on_failure = true,
    } or nil,
    mb.steps.shell { name = "compile", command = platform.make, halt_on_failure = true },
    mb.steps.shell {
      name = "test",
      command = { "./run-tests" },
      env = { TEST_PLATFORM = mb.property "platform" },
      decode_rc = { [0] = mb.results.SUCCESS, [5] = mb.results.WARNINGS },
      warn_on_warnings = true,
      description_done = mb.interpolate("tested %(prop:got_revision:-an unknown revision)s"),
    },
    mb.steps.shell {
      name = "docs",
      command = { "make", "docs" },
      do_step_if = function(props) return props.branch == "main" end,
      hide_step_if = function(result) return result == mb.results.SKIPPED end,
    },
  }
end

local workers, builders, all_names = {}, {}, {}
---@type table<string, string[]>
local by_branch = {}
for _, platform in ipairs(platforms) do
  table.insert(workers, mb.worker { name = platform.worker, max_builds = 2 })
end
for _, branch in ipairs(branches) do
  by_branch[branch] = {}
  for _, platform in ipairs(platforms) do
    local name = platform.name .. " " .. branch
    table.insert(all_names, name)
    table.insert(by_branch[branch], name)
    table.insert(builders, mb.builder {
      name = name,
      workernames = { platform.worker },
      tags = { branch, platform.worker },
      properties = { platform = platform.name },
      steps = steps_for(platform),
    })
  end
end

local schedulers = {
  mb.schedulers.force {
    name = "Force build",
    builders = all_names,
    codebases = { "" },
  },
}
for _, branch in ipairs(branches) do
  table.insert(schedulers, mb.schedulers.single_branch {
    name = "Push to " .. branch,
    change_filter = { branch = branch },
    builders = by_branch[branch],
  })
end

return {
  title = "Project CI",
  www = { port = 8010, bind = "127.0.0.1" },
  protocols = { quic = { port = 9989, bind = "0.0.0.0" } },
  db = { url = "sqlite:state.sqlite" },
  properties = { project = "project" },
  workers = workers,
  builders = builders,
  schedulers = schedulers,
  change_sources = {
    mb.changes.git_poller { repourl = repo, branches = branches, poll_interval = 60 },
  },
}
