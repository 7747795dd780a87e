//! JUnit/xUnit XML reports, read into test cases and counts.
//!
//! "JUnit XML" has no single schema: pytest, Surefire, go-junit-report,
//! jest-junit, nextest, GoogleTest, CTest, PHPUnit, Bazel and XCTest each write
//! their own dialect. What they share is a root `<testsuites>` or `<testsuite>`,
//! `<testcase>` elements somewhere below it, and `<failure>`, `<error>` or
//! `<skipped>` children on the cases that did not pass. This module reads
//! exactly that and nothing more; the counting rules are the ones the widely
//! used report actions agree on (see `tests/fixtures/junit/README.md`).
//!
//! The report comes from a worker, which is not trusted. So the document is
//! read as a stream of events (quick-xml's `Reader` over the bytes, nothing is
//! built as a tree), nesting is capped before it can grow, every string kept is
//! cut at a limit, the bulky parts (`<system-out>`, `<properties>`) are skipped
//! without being copied, and no DTD or external entity is ever resolved.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesRef, BytesStart, Event};

/// Longest test, class, suite or file name kept, in bytes; a longer one is cut
/// and ends in "…". Every kept case copies its suite's name, so an unbounded
/// name would be multiplied by the number of cases.
pub const MAX_NAME_BYTES: usize = 1024;

/// Appended to a text that was cut at its limit (counted inside the limit).
const CUT_MARKER: &str = "…";

/// Attribute values read as numbers are never longer than this.
const MAX_NUMBER_BYTES: usize = 64;

/// Longest reference name (`amp`, `#x1F600`) looked up in an attribute value.
const MAX_REFERENCE_NAME: usize = 32;

/// Elements whose content is never looked at: a suite-level `<system-out>`
/// can be many megabytes.
const IGNORED_ELEMENTS: [&str; 3] = ["properties", "system-out", "system-err"];

/// Children of a `<testcase>` that record a failed run of a test that was
/// rerun (Surefire's `rerunFailingTestsCount`, nextest retries).
const RERUN_ELEMENTS: [&str; 4] = ["flakyFailure", "flakyError", "rerunFailure", "rerunError"];

/// How much of a report is kept. The defaults suit a CI master: a report that
/// goes past them still parses, only its excess is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Test cases kept in [`Report::cases`]; later ones are only counted.
    pub max_cases: usize,
    /// Longest [`TestCase::message`], in bytes.
    pub max_message: usize,
    /// Longest [`TestCase::details`], in bytes.
    pub max_details: usize,
    /// Deepest element nesting accepted; deeper is [`JunitError::TooDeep`].
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_cases: 100_000,
            max_message: 4096,
            max_details: 16384,
            max_depth: 64,
        }
    }
}

/// What happened to one test case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No `<error>`, `<failure>` or `<skipped>` child.
    Passed,
    /// A `<failure>` child (and no `<error>`): an assertion failed.
    Failure,
    /// An `<error>` child: the test could not run to its end.
    Error,
    /// A `<skipped>` child (and neither of the above).
    Skipped,
}

impl Outcome {
    /// The lower-case name: "passed", "failure", "error" or "skipped".
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failure => "failure",
            Outcome::Error => "error",
            Outcome::Skipped => "skipped",
        }
    }

    /// Which outcome wins when a case has several result children.
    fn rank(self) -> u8 {
        match self {
            Outcome::Passed => 0,
            Outcome::Skipped => 1,
            Outcome::Failure => 2,
            Outcome::Error => 3,
        }
    }

    /// The outcome a `<testcase>` child element stands for, if any.
    fn of_element(element: &str) -> Option<Outcome> {
        match element {
            "failure" => Some(Outcome::Failure),
            "error" => Some(Outcome::Error),
            "skipped" => Some(Outcome::Skipped),
            _ => None,
        }
    }
}

/// One `<testcase>` of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCase {
    /// Name of the innermost `<testsuite>` around the case ("" if none).
    pub suite: String,
    /// The `classname` attribute.
    pub classname: Option<String>,
    /// The `name` attribute ("" if absent).
    pub name: String,
    /// The `file` attribute (pytest, GoogleTest, PHPUnit).
    pub file: Option<String>,
    /// The `line` attribute.
    pub line: Option<u32>,
    /// The `time` attribute (seconds), else Bazel's `duration`, in nanoseconds;
    /// None when absent, unreadable or negative.
    pub duration_ns: Option<u64>,
    /// What happened.
    pub outcome: Outcome,
    /// The `message` of the deciding `<error>`/`<failure>`/`<skipped>`, else
    /// the first non-blank line of its body, cut at [`Limits::max_message`].
    pub message: Option<String>,
    /// The body of the deciding `<error>`/`<failure>`/`<skipped>` (text or
    /// CDATA), cut at [`Limits::max_details`].
    pub details: Option<String>,
    /// Passed, but only after a rerun (`<flakyFailure>`, `<rerunError>`, ...).
    pub flaky: bool,
}

/// Test cases by outcome, counted over the whole report (also those past
/// [`Limits::max_cases`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Every `<testcase>`.
    pub tests: u64,
    /// Cases with no result child.
    pub passed: u64,
    /// Cases whose outcome is [`Outcome::Failure`].
    pub failures: u64,
    /// Cases whose outcome is [`Outcome::Error`].
    pub errors: u64,
    /// Cases whose outcome is [`Outcome::Skipped`].
    pub skipped: u64,
    /// Passed cases that needed a rerun (also counted in `passed`).
    pub flaky: u64,
}

impl Counts {
    /// Counts one case.
    fn add(&mut self, case: &TestCase) {
        self.tests += 1;
        match case.outcome {
            Outcome::Passed => self.passed += 1,
            Outcome::Failure => self.failures += 1,
            Outcome::Error => self.errors += 1,
            Outcome::Skipped => self.skipped += 1,
        }
        if case.flaky {
            self.flaky += 1;
        }
    }
}

/// The counts the tool wrote into the report itself, which may disagree with
/// [`Counts`] (pytest counts subtests, go-junit-report leaves out zeros). Taken
/// from the root `<testsuites>` if it carries any of them, else from the root
/// `<testsuite>`, else summed over the top-level `<testsuite>`s. None where the
/// attribute is absent (or not a number).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    /// The `tests` attribute.
    pub tests: Option<u64>,
    /// The `failures` attribute.
    pub failures: Option<u64>,
    /// The `errors` attribute.
    pub errors: Option<u64>,
    /// The `skipped` attribute.
    pub skipped: Option<u64>,
}

impl Declared {
    /// Whether any of the attributes was there.
    fn any(&self) -> bool {
        self.tests.is_some()
            || self.failures.is_some()
            || self.errors.is_some()
            || self.skipped.is_some()
    }

    /// Adds another suite's numbers; an attribute stays None only if absent in both.
    fn add(&mut self, other: &Declared) {
        self.tests = sum_declared(self.tests, other.tests);
        self.failures = sum_declared(self.failures, other.failures);
        self.errors = sum_declared(self.errors, other.errors);
        self.skipped = sum_declared(self.skipped, other.skipped);
    }
}

/// The sum of two optional declared numbers.
fn sum_declared(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// A parsed report.
#[derive(Debug, Clone)]
pub struct Report {
    /// The test cases in document order, at most [`Limits::max_cases`].
    pub cases: Vec<TestCase>,
    /// The counts the report declares about itself.
    pub declared: Declared,
    /// True when [`Limits::max_cases`] was hit: later cases are counted in
    /// [`Report::counts`] but not kept.
    pub truncated: bool,
    counts: Counts,
}

impl Report {
    /// Every `<testcase>` counted by outcome, kept or not.
    pub fn counts(&self) -> Counts {
        self.counts
    }
}

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JunitError {
    /// Not well-formed XML (truncated, mismatched tags, bad attributes); the
    /// text says at which byte.
    #[error("not XML: {0}")]
    Xml(String),
    /// Well-formed enough, but the first element is not a JUnit root.
    #[error("no <testsuites> or <testsuite> root element")]
    NotJunit,
    /// Elements nested deeper than [`Limits::max_depth`].
    #[error("nesting deeper than {0} elements")]
    TooDeep(usize),
}

/// Reads a JUnit/xUnit XML report. Invalid UTF-8 is replaced (U+FFFD), not an
/// error; parsing stops at the end of the root element, so anything after it
/// is not looked at.
pub fn parse(xml: &[u8], limits: &Limits) -> Result<Report, JunitError> {
    let text = String::from_utf8_lossy(xml);
    let mut reader = Reader::from_str(&text);
    // A raw `&` in text is a common slip of hand-made reports: keep it as text.
    reader.config_mut().allow_dangling_amp = true;
    let mut walker = Walker::new(limits);
    loop {
        let event = reader.read_event().map_err(|err| {
            JunitError::Xml(format!("at byte {}: {err}", reader.error_position()))
        })?;
        let position = reader.buffer_position();
        if walker.handle(event, position)? == Step::Done {
            return walker.finish();
        }
    }
}

/// Whether the document has more to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    More,
    Done,
}

/// Which element the document starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootKind {
    Suites,
    Suite,
}

/// What an open element means for its content.
#[derive(Debug)]
enum Frame {
    /// `<testsuites>` or an unknown element: its children are walked.
    Container,
    /// A `<testsuite>`, with its name for the cases inside it.
    Suite { name: String },
    /// A `<testcase>` being read.
    Case(Box<CaseBuilder>),
    /// A `<failure>`/`<error>`/`<skipped>` directly in a case; `capturing`
    /// when it decides the case's outcome, so its body is kept.
    Result { capturing: bool },
    /// Content that is skipped whole (`<system-out>`, rerun records, ...).
    Opaque,
}

/// The state of one parse: the open elements and what has been found so far.
struct Walker<'l> {
    limits: &'l Limits,
    stack: Vec<Frame>,
    root: Option<RootKind>,
    root_declared: Declared,
    summed_declared: Declared,
    cases: Vec<TestCase>,
    truncated: bool,
    counts: Counts,
}

impl<'l> Walker<'l> {
    fn new(limits: &'l Limits) -> Self {
        Self {
            limits,
            stack: Vec::new(),
            root: None,
            root_declared: Declared::default(),
            summed_declared: Declared::default(),
            cases: Vec::new(),
            truncated: false,
            counts: Counts::default(),
        }
    }

    /// Takes in one event; `position` is the byte offset just after it.
    fn handle(&mut self, event: Event<'_>, position: u64) -> Result<Step, JunitError> {
        match event {
            Event::Start(start) => self.open(&start, position).map(|()| Step::More),
            Event::Empty(start) => {
                self.open(&start, position)?;
                Ok(self.close())
            }
            Event::End(_) => Ok(self.close()),
            Event::Text(text) => {
                self.capture(&text);
                Ok(Step::More)
            }
            Event::CData(data) => {
                self.capture(&data);
                Ok(Step::More)
            }
            Event::GeneralRef(reference) => {
                self.capture_reference(&reference);
                Ok(Step::More)
            }
            Event::Eof => Err(self.early_end(position)),
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => Ok(Step::More),
        }
    }

    /// The error for a document that ends before its root element does.
    fn early_end(&self, position: u64) -> JunitError {
        if self.root.is_none() {
            JunitError::NotJunit
        } else {
            JunitError::Xml(format!(
                "at byte {position}: the document ends inside its root element"
            ))
        }
    }

    /// A start tag (or an empty element): pushes what it means.
    fn open(&mut self, start: &BytesStart<'_>, position: u64) -> Result<(), JunitError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(JunitError::TooDeep(self.limits.max_depth));
        }
        let frame = if self.root.is_none() {
            self.open_root(start, position)?
        } else {
            self.open_child(start, position)?
        };
        self.stack.push(frame);
        Ok(())
    }

    /// The document's first element, which must be a JUnit root.
    fn open_root(&mut self, start: &BytesStart<'_>, position: u64) -> Result<Frame, JunitError> {
        let kind = match start.local_name().into_inner() {
            "testsuites" => RootKind::Suites,
            "testsuite" => RootKind::Suite,
            _ => return Err(JunitError::NotJunit),
        };
        let (name, declared) = suite_attributes(start, position)?;
        self.root = Some(kind);
        self.root_declared = declared;
        Ok(match kind {
            RootKind::Suites => Frame::Container,
            RootKind::Suite => Frame::Suite { name },
        })
    }

    /// An element inside the root.
    fn open_child(&mut self, start: &BytesStart<'_>, position: u64) -> Result<Frame, JunitError> {
        let element = start.local_name().into_inner();
        let in_case = match self.stack.last() {
            Some(Frame::Opaque | Frame::Result { .. }) | None => return Ok(Frame::Opaque),
            Some(Frame::Case(_)) => true,
            Some(Frame::Container | Frame::Suite { .. }) => false,
        };
        match element {
            "testsuite" => self.open_suite(start, position),
            "testcase" => self.open_case(start, position),
            _ if IGNORED_ELEMENTS.contains(&element) => Ok(Frame::Opaque),
            _ if in_case => self.open_case_child(element, start, position),
            _ => Ok(Frame::Container),
        }
    }

    /// A `<testsuite>` below the root; a top-level one adds to the declared sums.
    fn open_suite(&mut self, start: &BytesStart<'_>, position: u64) -> Result<Frame, JunitError> {
        let (name, declared) = suite_attributes(start, position)?;
        if self.stack.len() == 1 && self.root == Some(RootKind::Suites) {
            self.summed_declared.add(&declared);
        }
        Ok(Frame::Suite { name })
    }

    /// A `<testcase>`, in the innermost open suite.
    fn open_case(&mut self, start: &BytesStart<'_>, position: u64) -> Result<Frame, JunitError> {
        let suite = self
            .stack
            .iter()
            .rev()
            .find_map(|frame| match frame {
                Frame::Suite { name } => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let case = CaseBuilder::new(start, suite, position)?;
        Ok(Frame::Case(Box::new(case)))
    }

    /// A direct child of the open `<testcase>`.
    fn open_case_child(
        &mut self,
        element: &str,
        start: &BytesStart<'_>,
        position: u64,
    ) -> Result<Frame, JunitError> {
        let limits = self.limits;
        let Some(Frame::Case(case)) = self.stack.last_mut() else {
            return Ok(Frame::Container);
        };
        if let Some(outcome) = Outcome::of_element(element) {
            let capturing = case.open_result(outcome, start, limits, position)?;
            return Ok(Frame::Result { capturing });
        }
        if RERUN_ELEMENTS.contains(&element) {
            case.rerun = true;
            return Ok(Frame::Opaque);
        }
        Ok(Frame::Container)
    }

    /// An end tag: pops its element, records a finished case.
    fn close(&mut self) -> Step {
        if let Some(Frame::Case(case)) = self.stack.pop() {
            self.record(case.build(self.limits));
        }
        if self.stack.is_empty() {
            Step::Done
        } else {
            Step::More
        }
    }

    /// Counts a finished case and keeps it while there is room.
    fn record(&mut self, case: TestCase) {
        self.counts.add(&case);
        if self.cases.len() < self.limits.max_cases {
            self.cases.push(case);
        } else {
            self.truncated = true;
        }
    }

    /// The open case whose body is being kept, if the innermost element is
    /// its deciding result.
    fn capturing_case(&mut self) -> Option<&mut CaseBuilder> {
        match self.stack.as_mut_slice() {
            [.., Frame::Case(case), Frame::Result { capturing: true }] => Some(case.as_mut()),
            _ => None,
        }
    }

    /// Text or CDATA: kept only inside a deciding result.
    fn capture(&mut self, text: &str) {
        if let Some(case) = self.capturing_case() {
            case.body.push(text);
        }
    }

    /// An `&...;` in text: kept, resolved, only inside a deciding result.
    fn capture_reference(&mut self, reference: &BytesRef<'_>) {
        if let Some(case) = self.capturing_case() {
            push_reference(&mut case.body, reference);
        }
    }

    /// The report, once the root element has closed.
    fn finish(self) -> Result<Report, JunitError> {
        let declared = match self.root {
            None => return Err(JunitError::NotJunit),
            Some(RootKind::Suites) if !self.root_declared.any() => self.summed_declared,
            Some(_) => self.root_declared,
        };
        Ok(Report {
            cases: self.cases,
            declared,
            truncated: self.truncated,
            counts: self.counts,
        })
    }
}

/// A `<testcase>` whose end tag has not been read yet.
#[derive(Debug)]
struct CaseBuilder {
    suite: String,
    classname: Option<String>,
    name: String,
    file: Option<String>,
    line: Option<u32>,
    duration_ns: Option<u64>,
    outcome: Outcome,
    /// The deciding result's `message` attribute.
    message: Option<String>,
    /// The deciding result's body, as read (line ends not yet normalised).
    body: BoundedText,
    /// A rerun record was seen.
    rerun: bool,
}

impl CaseBuilder {
    /// Reads the `<testcase>` attributes.
    fn new(start: &BytesStart<'_>, suite: String, position: u64) -> Result<Self, JunitError> {
        let [name, classname, file, line, time, duration] = raw_attributes(
            start,
            ["name", "classname", "file", "line", "time", "duration"],
            position,
        )?;
        let duration_ns = time
            .as_deref()
            .and_then(parse_seconds)
            .or_else(|| duration.as_deref().and_then(parse_seconds));
        Ok(Self {
            suite,
            classname: classname.as_deref().map(decode_name),
            name: name.as_deref().map(decode_name).unwrap_or_default(),
            file: file.as_deref().map(decode_name),
            line: line.as_deref().and_then(parse_line),
            duration_ns,
            outcome: Outcome::Passed,
            message: None,
            body: BoundedText::new(0),
            rerun: false,
        })
    }

    /// A result child: returns whether it decides the outcome (an `<error>`
    /// beats a `<failure>` beats a `<skipped>`; of equals the first wins), in
    /// which case its message and body replace any earlier one's.
    fn open_result(
        &mut self,
        outcome: Outcome,
        start: &BytesStart<'_>,
        limits: &Limits,
        position: u64,
    ) -> Result<bool, JunitError> {
        if outcome.rank() <= self.outcome.rank() {
            return Ok(false);
        }
        let [message] = raw_attributes(start, ["message"], position)?;
        self.outcome = outcome;
        self.message = message.as_deref().and_then(|raw| {
            let decoded = decode_attribute(raw, limits.max_message).finish();
            let trimmed = decoded.trim();
            (!trimmed.is_empty()).then(|| trimmed.to_owned())
        });
        self.body = BoundedText::new(limits.max_details);
        Ok(true)
    }

    /// The finished case.
    fn build(self, limits: &Limits) -> TestCase {
        let details = finish_body(self.body);
        let message = self.message.or_else(|| {
            let line = details.as_deref()?.lines().next()?.trim();
            let mut message = BoundedText::new(limits.max_message);
            message.push(line);
            Some(message.finish())
        });
        TestCase {
            suite: self.suite,
            classname: self.classname,
            name: self.name,
            file: self.file,
            line: self.line,
            duration_ns: self.duration_ns,
            flaky: self.rerun && self.outcome == Outcome::Passed,
            outcome: self.outcome,
            message,
            details,
        }
    }
}

/// The `name` and declared counts of a `<testsuite>` or `<testsuites>`.
fn suite_attributes(
    start: &BytesStart<'_>,
    position: u64,
) -> Result<(String, Declared), JunitError> {
    let [name, tests, failures, errors, skipped] = raw_attributes(
        start,
        ["name", "tests", "failures", "errors", "skipped"],
        position,
    )?;
    let declared = Declared {
        tests: tests.as_deref().and_then(parse_count),
        failures: failures.as_deref().and_then(parse_count),
        errors: errors.as_deref().and_then(parse_count),
        skipped: skipped.as_deref().and_then(parse_count),
    };
    let name = name.as_deref().map(decode_name).unwrap_or_default();
    Ok((name, declared))
}

/// The raw (still escaped) values of the attributes named in `keys`, by
/// their full name; the first of duplicates wins. A malformed attribute list
/// is an error.
fn raw_attributes<'s, const N: usize>(
    start: &'s BytesStart<'_>,
    keys: [&str; N],
    position: u64,
) -> Result<[Option<Cow<'s, str>>; N], JunitError> {
    let mut values = [const { None }; N];
    let mut attributes = start.attributes();
    attributes.with_checks(false);
    for attribute in attributes {
        let attribute = attribute.map_err(|err| {
            JunitError::Xml(format!("in the tag ending at byte {position}: {err}"))
        })?;
        let key = attribute.key.into_inner();
        let slot = keys
            .iter()
            .position(|wanted| *wanted == key)
            .and_then(|index| values.get_mut(index));
        if let Some(slot @ None) = slot {
            *slot = Some(attribute.value);
        }
    }
    Ok(values)
}

/// A string that stops growing at `cap` bytes and remembers that it did.
#[derive(Debug)]
struct BoundedText {
    text: String,
    cap: usize,
    cut: bool,
}

impl BoundedText {
    fn new(cap: usize) -> Self {
        Self {
            text: String::new(),
            cap,
            cut: false,
        }
    }

    /// Appends as much of `piece` as fits, never splitting a character.
    fn push(&mut self, piece: &str) {
        if self.cut || piece.is_empty() {
            return;
        }
        let room = self.cap.saturating_sub(self.text.len());
        let kept = char_prefix(piece, room);
        self.text.push_str(kept);
        self.cut = kept.len() < piece.len();
    }

    /// Appends one character if it fits.
    fn push_char(&mut self, c: char) {
        self.push(c.encode_utf8(&mut [0; 4]));
    }

    /// The text, ending in [`CUT_MARKER`] if something was dropped; never
    /// longer than the cap.
    fn finish(self) -> String {
        let Self { mut text, cap, cut } = self;
        if cut && cap >= CUT_MARKER.len() {
            let keep = char_prefix(&text, cap - CUT_MARKER.len()).len();
            text.truncate(keep);
            text.push_str(CUT_MARKER);
        }
        text
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn char_prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A result body as shown: line ends normalised, blank lines around it and
/// trailing spaces dropped; None if nothing is left.
fn finish_body(body: BoundedText) -> Option<String> {
    let BoundedText { text, cap, cut } = body;
    let normalized = if text.contains('\r') {
        Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(text.as_str())
    };
    let trimmed = trim_blank_lines(&normalized);
    if trimmed.is_empty() {
        return None;
    }
    let mut kept = BoundedText::new(cap);
    kept.push(trimmed);
    kept.cut |= cut;
    let kept = kept.finish();
    (!kept.is_empty()).then_some(kept)
}

/// `text` without its leading blank lines and trailing whitespace (the
/// indentation of its first non-blank line stays).
fn trim_blank_lines(text: &str) -> &str {
    let text = text.trim_end();
    let first_visible = text.find(|c: char| !c.is_whitespace()).unwrap_or(0);
    let line_start = text[..first_visible]
        .rfind('\n')
        .map_or(0, |newline| newline + 1);
    &text[line_start..]
}

/// Decodes a raw attribute value the way XML does (references resolved,
/// tabs and line ends turned into spaces), keeping at most `cap` bytes and
/// never reading further than needed.
fn decode_attribute(raw: &str, cap: usize) -> BoundedText {
    let mut out = BoundedText::new(cap);
    let mut rest = raw;
    while !out.cut {
        let special = rest.find(['&', '\t', '\n', '\r']).unwrap_or(rest.len());
        let (plain, tail) = rest.split_at(special);
        out.push(plain);
        rest = match tail.as_bytes().first() {
            None => break,
            Some(b'&') => decode_reference(&mut out, tail),
            Some(_) => {
                out.push(" ");
                let width = if tail.starts_with("\r\n") { 2 } else { 1 };
                tail.get(width..).unwrap_or_default()
            }
        };
    }
    out
}

/// Decodes the reference `tail` starts with (`&amp;`, `&#10;`), or a lone
/// `&` as itself; returns what follows it.
fn decode_reference<'a>(out: &mut BoundedText, tail: &'a str) -> &'a str {
    let after_amp = tail.get(1..).unwrap_or_default();
    let window = &after_amp.as_bytes()[..after_amp.len().min(MAX_REFERENCE_NAME + 1)];
    match window.iter().position(|&b| b == b';') {
        Some(end) => {
            push_reference(out, &BytesRef::new(&after_amp[..end]));
            &after_amp[end + 1..]
        }
        None => {
            out.push("&");
            after_amp
        }
    }
}

/// Appends what a reference stands for: a character reference or one of
/// XML's five predefined entities. Anything else (a DTD's entity, which is
/// never resolved) is kept as written.
fn push_reference(out: &mut BoundedText, reference: &BytesRef<'_>) {
    let name: &str = reference;
    if let Ok(Some(c)) = reference.resolve_char_ref() {
        out.push_char(c);
    } else if let Some(replacement) = resolve_predefined_entity(name) {
        out.push(replacement);
    } else {
        out.push("&");
        out.push(name);
        out.push(";");
    }
}

/// A name attribute's value, decoded and cut at [`MAX_NAME_BYTES`].
fn decode_name(raw: &str) -> String {
    decode_attribute(raw, MAX_NAME_BYTES).finish()
}

/// A numeric attribute's value decoded and trimmed; None if implausibly long.
fn number_text(raw: &str) -> Option<String> {
    let decoded = decode_attribute(raw, MAX_NUMBER_BYTES);
    (!decoded.cut).then(|| decoded.text.trim().to_owned())
}

/// A declared count: a non-negative integer (also written as `3.0`).
fn parse_count(raw: &str) -> Option<u64> {
    let text = number_text(raw)?;
    text.parse::<u64>().ok().or_else(|| {
        let value: f64 = text.parse().ok()?;
        let integral = value.is_finite() && value >= 0.0 && value.fract() == 0.0;
        (integral && value < u64::MAX as f64).then_some(value as u64)
    })
}

/// A line number.
fn parse_line(raw: &str) -> Option<u32> {
    number_text(raw)?.parse().ok()
}

/// A duration in seconds (`0.`, `1,234.5`, `1e-3`), in nanoseconds; None if
/// unreadable, negative or too large.
fn parse_seconds(raw: &str) -> Option<u64> {
    let text = number_text(raw)?.replace(',', "");
    let seconds: f64 = text.parse().ok()?;
    let nanos = seconds * 1e9;
    let valid = nanos.is_finite() && nanos >= 0.0 && nanos < u64::MAX as f64;
    valid.then(|| nanos.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/junit/");

    fn fixture(file: &str) -> Vec<u8> {
        let path = format!("{FIXTURES}{file}");
        std::fs::read(&path).unwrap_or_else(|err| panic!("reading {path}: {err}"))
    }

    fn parse_fixture(file: &str) -> Report {
        parse(&fixture(file), &Limits::default()).unwrap_or_else(|err| panic!("{file}: {err}"))
    }

    fn parse_str(xml: &str) -> Report {
        parse(xml.as_bytes(), &Limits::default()).unwrap_or_else(|err| panic!("{xml}: {err}"))
    }

    fn case<'r>(report: &'r Report, name: &str) -> &'r TestCase {
        report
            .cases
            .iter()
            .find(|case| case.name == name)
            .unwrap_or_else(|| panic!("no case named {name}"))
    }

    fn json_count(value: &serde_json::Value, file: &str, key: &str) -> Option<u64> {
        let field = &value[key];
        assert!(
            field.is_null() || field.is_u64(),
            "{file}: expected.json {key} is {field}"
        );
        field.as_u64()
    }

    #[test]
    fn fixtures_match_expected_json() {
        let expected: serde_json::Value =
            serde_json::from_slice(&fixture("expected.json")).expect("expected.json is JSON");
        let files = expected["files"].as_array().expect("files is an array");
        let xml_files = std::fs::read_dir(FIXTURES)
            .expect("fixture dir")
            .filter(|entry| {
                let name = entry.as_ref().expect("dir entry").file_name();
                name.to_string_lossy().ends_with(".xml")
            })
            .count();
        assert_eq!(
            files.len(),
            xml_files,
            "every fixture has an expected.json entry"
        );
        for entry in files {
            let file = entry["file"].as_str().expect("file is a string");
            let report = parse_fixture(file);
            let counts = report.counts();
            let counted = [
                ("tests", counts.tests),
                ("failures", counts.failures),
                ("errors", counts.errors),
                ("skipped", counts.skipped),
                ("passed", counts.passed),
                ("flaky", counts.flaky),
            ];
            for (key, got) in counted {
                let want = json_count(&entry["counted"], file, key);
                assert_eq!(Some(got), want, "{file}: counted {key}");
            }
            let declared = [
                ("tests", report.declared.tests),
                ("failures", report.declared.failures),
                ("errors", report.declared.errors),
                ("skipped", report.declared.skipped),
            ];
            for (key, got) in declared {
                let want = json_count(&entry["declared"], file, key);
                assert_eq!(got, want, "{file}: declared {key}");
            }
            assert_eq!(
                report.cases.len() as u64,
                counts.tests,
                "{file}: cases kept"
            );
            assert!(!report.truncated, "{file}: truncated");
        }
    }

    #[test]
    fn pytest_failure_has_message_file_and_line() {
        let report = parse_fixture("pytest-fail-skip.xml");
        let failed = case(&report, "test_rsh_events");
        assert_eq!(failed.outcome, Outcome::Failure);
        assert_eq!(failed.suite, "pytest");
        assert_eq!(
            failed.classname.as_deref(),
            Some("test.test_spark.SparkTests")
        );
        assert_eq!(failed.file.as_deref(), Some("test/test_spark.py"));
        assert_eq!(failed.line, Some(819));
        assert_eq!(failed.duration_ns, Some(7_541_000_000));
        let message = failed.message.as_deref().expect("message");
        // Attribute values are normalised: their line ends become spaces.
        assert!(
            message.starts_with("self = <test_spark.SparkTests testMethod=test_rsh_events>  "),
            "{message}"
        );
        assert!(
            message.ends_with("E   AssertionError: 143 != 0"),
            "{message}"
        );
        let details = failed.details.as_deref().expect("details");
        assert!(
            details.starts_with("self = <test_spark.SparkTests"),
            "{details}"
        );
        assert!(details.ends_with("E AssertionError: 143 != 0"), "{details}");

        let skipped = case(&report, "test_get_available_devices");
        assert_eq!(skipped.outcome, Outcome::Skipped);
        assert_eq!(
            skipped.message.as_deref(),
            Some("get_available_devices only supported in Spark 3.0 and above")
        );
        let details = skipped.details.as_deref().expect("skip details");
        assert!(
            details.starts_with("/horovod/test/test_spark.py:1642:"),
            "{details}"
        );
        assert_eq!(case(&report, "test_get_col_info").outcome, Outcome::Passed);
        assert_eq!(case(&report, "test_get_col_info").message, None);
    }

    #[test]
    fn nextest_failure_message_is_first_line_of_the_panic() {
        let report = parse_fixture("cargo-nextest.xml");
        let failed = case(&report, "test_failure");
        assert_eq!(failed.outcome, Outcome::Failure);
        assert_eq!(failed.suite, "oxidized_navigation::parry3d");
        assert_eq!(
            failed.message.as_deref(),
            Some("thread 'test_failure' panicked at tests/parry3d.rs:154:5:")
        );
        let details = failed.details.as_deref().expect("details");
        assert!(details.contains("assertion `left == right` failed: 0 must equal 1"));
        assert!(details.ends_with("to display a backtrace"), "{details}");
        assert!(
            !details.contains("running 1 test"),
            "system-out is not details"
        );
        assert_eq!(case(&report, "test_annotations").details, None);
    }

    #[test]
    fn go_panic_named_failure_is_an_error() {
        let report = parse_fixture("go-junit-report-panic.xml");
        assert_eq!(report.cases.len(), 2);
        for (case, suite) in report.cases.iter().zip(["package/panic", "package/panic2"]) {
            assert_eq!(case.name, "Failure");
            assert_eq!(case.suite, suite);
            assert_eq!(case.outcome, Outcome::Error);
            assert_eq!(case.outcome.as_str(), "error");
            assert_eq!(case.message.as_deref(), Some("Runtime error"));
            assert_eq!(case.details.as_deref(), Some("panic: init\nstacktrace"));
        }
    }

    #[test]
    fn gtest_time_zero_dot_is_zero() {
        let report = parse_fixture("gtest.xml");
        assert_eq!(report.cases.len(), 3);
        assert!(report.cases.iter().all(|case| case.duration_ns == Some(0)));
        let init = case(&report, "Init");
        assert_eq!(init.line, Some(7));
        assert_eq!(init.suite, "Counter");
        assert!(
            init.file
                .as_deref()
                .is_some_and(|file| file.ends_with("/Counter.test.cpp"))
        );
    }

    #[test]
    fn mocha_duplicates_are_all_kept() {
        let report = parse_fixture("mocha-duplicate-names.xml");
        assert_eq!(report.cases.len(), 109);
        let distinct: std::collections::HashSet<_> = report
            .cases
            .iter()
            .map(|case| (case.classname.clone(), case.name.clone()))
            .collect();
        assert_eq!(distinct.len(), 101);
    }

    #[test]
    fn bazel_duration_and_error() {
        let report = parse_fixture("bazel-error.xml");
        let only = &report.cases[0];
        assert_eq!(only.outcome, Outcome::Error);
        assert_eq!(only.duration_ns, Some(0));
        assert_eq!(only.message.as_deref(), Some("exited with error code 1"));
        assert_eq!(
            only.details, None,
            "suite-level system-out is not the case's"
        );
        let report = parse_str(r#"<testsuite><testcase name="a" duration="2.5"/></testsuite>"#);
        assert_eq!(report.cases[0].duration_ns, Some(2_500_000_000));
        let report =
            parse_str(r#"<testsuite><testcase name="a" duration="2" time="1"/></testsuite>"#);
        assert_eq!(
            report.cases[0].duration_ns,
            Some(1_000_000_000),
            "time wins"
        );
    }

    #[test]
    fn surefire_rerun_that_passed_is_flaky() {
        let report = parse_fixture("surefire-flaky-rerun.xml");
        let only = &report.cases[0];
        assert_eq!(only.outcome, Outcome::Passed);
        assert!(only.flaky);
        assert_eq!(only.message, None);
        assert_eq!(only.details, None);
        let report = parse_str(
            "<testsuite><testcase name='a'><rerunFailure/><failure message='m'/></testcase></testsuite>",
        );
        assert!(
            !report.cases[0].flaky,
            "a case that failed in the end is not flaky"
        );
        assert_eq!(report.counts().flaky, 0);
    }

    #[test]
    fn nested_suites_name_their_cases() {
        let report = parse_fixture("phpunit-nested.xml");
        assert_eq!(report.cases[0].suite, "CLI Arguments");
        let inner = report.cases.last().expect("cases");
        assert_eq!(inner.suite, "PHPUnit\\Event\\DirectDispatcherTest");
        let jest = parse_fixture("jest-junit.xml");
        let failed = case(&jest, "Failing test");
        assert_eq!(failed.classname.as_deref(), Some("Test 1 › Test 1.1"));
        assert_eq!(failed.suite, "__tests__\\main.test.js");
        assert_eq!(
            failed.message.as_deref(),
            Some("Error: expect(received).toBeTruthy()")
        );
    }

    #[test]
    fn seconds_are_read_leniently() {
        let ns = |raw| parse_seconds(raw);
        assert_eq!(ns("0."), Some(0));
        assert_eq!(ns(" 0.001 "), Some(1_000_000));
        assert_eq!(ns("1e-3"), Some(1_000_000));
        assert_eq!(ns("1,234.5"), Some(1_234_500_000_000));
        assert_eq!(ns("6.435"), Some(6_435_000_000));
        assert_eq!(ns("-1"), None);
        assert_eq!(ns("abc"), None);
        assert_eq!(ns(""), None);
        assert_eq!(ns("NaN"), None);
        assert_eq!(ns("inf"), None);
        assert_eq!(ns("1e300"), None);
        assert_eq!(ns(&"1".repeat(1000)), None);
        assert_eq!(parse_count("12"), Some(12));
        assert_eq!(parse_count("3.0"), Some(3));
        assert_eq!(parse_count("-3"), None);
        assert_eq!(parse_count("2.5"), None);
        assert_eq!(parse_line("x"), None);
    }

    #[test]
    fn references_are_resolved_but_no_dtd_entity() {
        let report = parse_str(concat!(
            r#"<!DOCTYPE testsuite [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>"#,
            r#"<testsuite name="s&amp;t"><testcase name="a &lt;b&gt; &#x263A;&#65;&quot; &xxe;">"#,
            "<failure>x &lt; y&#10;&xxe; &amp; &apos;q&apos; <![CDATA[<raw> &amp;]]> & lone</failure>",
            "</testcase></testsuite>"
        ));
        let only = &report.cases[0];
        assert_eq!(only.suite, "s&t");
        assert_eq!(only.name, "a <b> ☺A\" &xxe;");
        assert_eq!(
            only.details.as_deref(),
            Some("x < y\n&xxe; & 'q' <raw> &amp; & lone")
        );
        assert_eq!(only.message.as_deref(), Some("x < y"));
    }

    #[test]
    fn attribute_whitespace_is_normalised_but_char_refs_kept() {
        let report = parse_str(
            "<testsuite><testcase name='a'><error message='one\r\ntwo\tthree&#10;four'/></testcase></testsuite>",
        );
        assert_eq!(
            report.cases[0].message.as_deref(),
            Some("one two three\nfour")
        );
        assert_eq!(report.cases[0].details, None);
    }

    #[test]
    fn error_beats_failure_beats_skipped_in_any_order() {
        let report = parse_str(concat!(
            "<testsuite>",
            "<testcase name='a'><skipped message='s'/><failure message='f'>F</failure><error message='e'>E</error></testcase>",
            "<testcase name='b'><error message='e'>E</error><failure message='f'>F</failure></testcase>",
            "<testcase name='c'><failure>first</failure><failure>second</failure></testcase>",
            "</testsuite>",
        ));
        for name in ["a", "b"] {
            let case = case(&report, name);
            assert_eq!(case.outcome, Outcome::Error, "{name}");
            assert_eq!(case.message.as_deref(), Some("e"), "{name}");
            assert_eq!(case.details.as_deref(), Some("E"), "{name}");
        }
        assert_eq!(case(&report, "c").details.as_deref(), Some("first"));
    }

    #[test]
    fn namespaced_elements_use_local_names() {
        let report = parse_str(concat!(
            r#"<j:testsuites xmlns:j="urn:junit" tests="1">"#,
            r#"<j:testsuite name="s"><j:testcase name="t"><j:failure message="m"/></j:testcase>"#,
            "</j:testsuite></j:testsuites>"
        ));
        assert_eq!(report.counts().failures, 1);
        assert_eq!(report.declared.tests, Some(1));
        assert_eq!(report.cases[0].suite, "s");
    }

    #[test]
    fn ignored_elements_hide_their_cases() {
        let report = parse_str(concat!(
            "<testsuite><properties><testcase name='p'/></properties>",
            "<system-out><testcase name='o'/></system-out>",
            "<group><testcase name='g'/></group>",
            "<testcase name='t'><system-err><failure/></system-err></testcase>",
            "</testsuite>"
        ));
        let names: Vec<_> = report.cases.iter().map(|case| case.name.as_str()).collect();
        assert_eq!(names, ["g", "t"]);
        assert_eq!(report.counts().passed, 2);
    }

    #[test]
    fn declared_numbers_sum_over_top_level_suites() {
        let report = parse_str(concat!(
            "<testsuites><testsuite tests='2' skipped='1'><testsuite tests='50'/></testsuite>",
            "<testsuite tests='3' failures='x'/></testsuites>"
        ));
        let declared = Declared {
            tests: Some(5),
            failures: None,
            errors: None,
            skipped: Some(1),
        };
        assert_eq!(report.declared, declared);
        let report = parse_str("<testsuite><testcase name='a'/></testsuite>");
        assert_eq!(report.declared, Declared::default());
        let report = parse_str("<testsuites/>");
        assert!(report.cases.is_empty());
        assert_eq!(report.counts(), Counts::default());
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let report = parse(
            b"<testsuite name='\xff'><testcase name='a\xc3'/></testsuite>",
            &Limits::default(),
        )
        .expect("lossy");
        assert_eq!(report.cases[0].suite, "\u{fffd}");
        assert_eq!(report.cases[0].name, "a\u{fffd}");
        let with_bom = parse(b"\xef\xbb\xbf<testsuite tests='0'/>", &Limits::default());
        assert_eq!(with_bom.expect("BOM").declared.tests, Some(0));
    }

    #[test]
    fn truncated_xml_is_an_xml_error() {
        let text = fixture("surefire-pulsar-large.xml");
        let end = text.len() - "</testsuites>\n".len();
        for cut in [10, 100, text.len() / 3, text.len() / 2, end] {
            let result = parse(&text[..cut], &Limits::default());
            assert!(
                matches!(result, Err(JunitError::Xml(_))),
                "cut at {cut}: {result:?}"
            );
        }
        let result = parse(
            b"<testsuite><testcase name='a'></testsuite>",
            &Limits::default(),
        );
        assert!(matches!(result, Err(JunitError::Xml(_))), "{result:?}");
        let result = parse(
            b"<testsuite><testcase name=a/></testsuite>",
            &Limits::default(),
        );
        assert!(matches!(result, Err(JunitError::Xml(_))), "{result:?}");
    }

    #[test]
    fn other_roots_are_not_junit() {
        for xml in [
            "<!DOCTYPE html><html><body><testsuite/></body></html>",
            "<testcase name='a'/>",
            "",
            "just text",
            "<?xml version='1.0'?><!-- nothing -->",
        ] {
            let result = parse(xml.as_bytes(), &Limits::default());
            assert!(
                matches!(result, Err(JunitError::NotJunit)),
                "{xml:?}: {result:?}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let depth = 10_000;
        let mut xml = String::from("<testsuites>");
        xml.push_str(&"<testsuite>".repeat(depth));
        xml.push_str(&"</testsuite>".repeat(depth));
        xml.push_str("</testsuites>");
        let result = parse(xml.as_bytes(), &Limits::default());
        assert!(matches!(result, Err(JunitError::TooDeep(64))), "{result:?}");
        let unlimited = Limits {
            max_depth: usize::MAX,
            ..Limits::default()
        };
        let report = parse(xml.as_bytes(), &unlimited).expect("deep but well-formed");
        assert_eq!(report.counts().tests, 0);
        let shallow = Limits {
            max_depth: 2,
            ..Limits::default()
        };
        let result = parse(
            b"<testsuite><testcase><failure/></testcase></testsuite>",
            &shallow,
        );
        assert!(matches!(result, Err(JunitError::TooDeep(2))), "{result:?}");
    }

    #[test]
    fn huge_bodies_and_messages_are_cut() {
        let limits = Limits::default();
        let big = "é".repeat(5 * 1024 * 1024);
        for wrap in [false, true] {
            let body = if wrap {
                format!("<![CDATA[{big}]]>")
            } else {
                big.clone()
            };
            let xml = format!(
                "<testsuite><testcase name='big'><failure>{body}</failure></testcase></testsuite>"
            );
            let report = parse(xml.as_bytes(), &limits).expect("big body");
            let details = report.cases[0].details.as_deref().expect("details");
            assert!(details.len() <= limits.max_details, "{}", details.len());
            assert!(details.len() > limits.max_details - 8, "{}", details.len());
            assert!(details.ends_with(CUT_MARKER));
            let message = report.cases[0].message.as_deref().expect("message");
            assert!(message.len() <= limits.max_message && message.ends_with(CUT_MARKER));
        }
        let xml = format!(
            "<testsuite name='{big}'><testcase name='{big}'><error message='{big}'/></testcase></testsuite>"
        );
        let report = parse(xml.as_bytes(), &limits).expect("big attributes");
        let only = &report.cases[0];
        assert!(only.suite.len() <= MAX_NAME_BYTES && only.suite.ends_with(CUT_MARKER));
        assert!(only.name.len() <= MAX_NAME_BYTES);
        let message = only.message.as_deref().expect("message");
        assert!(message.len() <= limits.max_message && message.ends_with(CUT_MARKER));
        let tiny = Limits {
            max_message: 2,
            max_details: 0,
            ..limits
        };
        let xml = "<testsuite><testcase name='a'><failure message='abc'>body</failure></testcase></testsuite>";
        let report = parse(xml.as_bytes(), &tiny).expect("tiny limits");
        assert_eq!(report.cases[0].message.as_deref(), Some("ab"));
        assert_eq!(report.cases[0].details, None);
    }

    #[test]
    fn max_cases_keeps_the_first_and_counts_all() {
        let limits = Limits {
            max_cases: 5,
            ..Limits::default()
        };
        let report = parse(&fixture("pytest-subtests-xfail.xml"), &limits).expect("parse");
        assert_eq!(report.cases.len(), 5);
        assert!(report.truncated);
        let counts = report.counts();
        assert_eq!(counts.tests, 10);
        assert_eq!((counts.passed, counts.failures, counts.skipped), (6, 2, 2));
        assert_eq!(report.cases[0].name, "test_always_pass");
        let limits = Limits {
            max_cases: 10,
            ..Limits::default()
        };
        let report = parse(&fixture("pytest-subtests-xfail.xml"), &limits).expect("parse");
        assert!(!report.truncated);
    }

    /// A small deterministic generator (Knuth's MMIX LCG), enough to stir bytes.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn check_invariants(result: &Result<Report, JunitError>, limits: &Limits) {
        if let Ok(report) = result {
            let counts = report.counts();
            assert!(report.cases.len() <= limits.max_cases);
            assert_eq!(
                counts.tests,
                counts.passed + counts.failures + counts.errors + counts.skipped
            );
            assert!(counts.flaky <= counts.passed);
            for case in &report.cases {
                assert!(
                    case.message
                        .as_ref()
                        .is_none_or(|m| m.len() <= limits.max_message)
                );
                assert!(
                    case.details
                        .as_ref()
                        .is_none_or(|d| d.len() <= limits.max_details)
                );
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        const PIECES: [&[u8]; 16] = [
            b"<",
            b">",
            b"/",
            b"=",
            b"'",
            b"\"",
            b"&",
            b";",
            b"<testsuite ",
            b"<testcase name='x'",
            b"<failure>",
            b"</testcase>",
            b"<![CDATA[",
            b"]]>",
            b"<!DOCTYPE x [",
            b"&#x",
        ];
        let limits = Limits {
            max_cases: 3,
            max_message: 5,
            max_details: 7,
            max_depth: 8,
        };
        let mut rng = Lcg(0x5eed);
        for _ in 0..3000 {
            let mut input = Vec::new();
            for _ in 0..rng.below(64) {
                if rng.below(2) == 0 {
                    input.extend_from_slice(PIECES[rng.below(PIECES.len())]);
                } else {
                    input.push(rng.next() as u8);
                }
            }
            check_invariants(&parse(&input, &limits), &limits);
        }
        let seed = fixture("pytest-fail-skip.xml");
        for _ in 0..500 {
            let mut input = seed.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(input.len());
                match rng.below(3) {
                    0 => input[at] = rng.next() as u8,
                    1 => input.truncate(at),
                    _ => {
                        input.remove(at);
                    }
                }
                if input.is_empty() {
                    break;
                }
            }
            check_invariants(&parse(&input, &limits), &limits);
            check_invariants(&parse(&input, &Limits::default()), &Limits::default());
        }
    }
}
