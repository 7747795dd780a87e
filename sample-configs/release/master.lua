-- A build that leaves something behind: it compiles with its warnings
-- counted (some suppressed), runs the tests and reads their JUnit reports
-- into test results, and uploads the release tarball and the HTML docs as
-- artifacts of the build, kept for two weeks and linked from the build page.
-- Point `repo` at your repository and run one worker called "builder".
local mb = require "moonbot"

local repo = "https://git.example.org/project.git"

return {
  title = "release",
  artifacts = { dir = "artifacts", keep_days = 14 },
  workers = { mb.worker { name = "builder" } },
  builders = {
    mb.builder {
      name = "release",
      workernames = { "builder" },
      steps = {
        mb.steps.git { repourl = repo, mode = "full", method = "fresh" },
        -- The build's properties for the build scripts (version, revision …).
        mb.steps.json_property_download { workerdest = "build-info.json" },
        mb.steps.compile {
          command = { "make", "-j4" },
          warning_pattern = "^(?P<file>[^:]+):(?P<line>[0-9]+):[0-9]+: warning: (?P<text>.*)",
          suppress_warnings = { { file = "^vendor/", warning = ".*" } },
          suppression_file = "ci/warnings.supp",
          max_warnings = 50,
        },
        mb.steps.test { command = { "make", "check" }, junit = { "reports/*.xml", "build/test-*.xml" } },
        mb.steps.shell { name = "package", command = { "make", "dist" } },
        mb.steps.file_upload {
          workersrc = mb.interpolate "dist/project-%(prop:got_revision:-dev)s.tar.gz",
          masterdest = "project.tar.gz",
          mode = tonumber("644", 8),
          max_size = 512 * 1024 * 1024,
        },
        mb.steps.directory_upload { workersrc = "docs/html", masterdest = "docs", compress = "gz" },
      },
    },
  },
  schedulers = {
    mb.schedulers.any_branch { name = "on-push", builders = { "release" } },
    mb.schedulers.force { name = "force", builders = { "release" } },
  },
}
