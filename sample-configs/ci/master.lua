-- Continuous integration of a git repository: the master polls it, and each
-- push to main or a release branch builds the pushed revision once the branch
-- has been quiet for a minute; a push that only touches docs/ builds nothing
-- by itself. A newer push to a branch cancels the older one's build, and pushes
-- that wait together become one build. The force form asks for a branch and
-- a revision. Point `repourl` at your repository (a path works too).
local mb = require "moonbot"

local function touches_code(change)
  for _, file in ipairs(change.files) do
    if not file:match("^docs/") then
      return true
    end
  end
  return false
end

return {
  title = "CI",
  www = { port = 8010, bind = "127.0.0.1" },
  protocols = { quic = { port = 9989, bind = "0.0.0.0" } },
  db = { url = "sqlite:state.sqlite" },

  workers = { mb.worker { name = "local-1", max_builds = 2 } },

  builders = {
    mb.builder {
      name = "test",
      workernames = { "local-1" },
      -- Waiting requests of one branch become one build of the newest (the default).
      collapse_requests = true,
      -- A newer revision of a branch stops the build of an older one.
      cancel_superseded = true,
      steps = {
        mb.steps.shell { command = mb.interpolate("echo testing %(prop:revision)s of %(prop:branch)s") },
      },
    },
  },

  change_sources = {
    mb.changes.git_poller {
      repourl = "https://github.com/example/app.git",
      branches = function(branch)
        return branch == "main" or branch:match("^release/") ~= nil
      end,
      poll_interval = "2m",
      poll_at_launch = true,
      project = "app",
    },
  },

  schedulers = {
    mb.schedulers.any_branch {
      name = "pushes",
      builders = { "test" },
      change_filter = { project = "app" },
      file_is_important = touches_code,
      tree_stable_timer = 60,
    },
    mb.schedulers.force {
      name = "force",
      builders = { "test" },
      codebases = {
        mb.params.codebase {
          branch = mb.params.string { name = "branch", default = "main", required = true },
          repository = "https://github.com/example/app.git",
          project = "app",
        },
      },
      properties = {
        mb.params.boolean { name = "clean", label = "Clean build" },
      },
    },
  },
}
