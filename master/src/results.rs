//! Buildbot's result codes and how they combine.

/// The build or step did what it should.
pub const SUCCESS: i32 = 0;
pub const WARNINGS: i32 = 1;
pub const FAILURE: i32 = 2;
pub const SKIPPED: i32 = 3;
/// Something went wrong in moonbot itself (or in a Lua function), not in the build.
pub const EXCEPTION: i32 = 4;
/// The build could not finish (worker lost, master stopping); its request runs again.
pub const RETRY: i32 = 5;
/// Somebody stopped it.
pub const CANCELLED: i32 = 6;

/// The lower-case name Buildbot uses for a result code.
pub fn name(code: i32) -> &'static str {
    match code {
        SUCCESS => "success",
        WARNINGS => "warnings",
        FAILURE => "failure",
        SKIPPED => "skipped",
        EXCEPTION => "exception",
        RETRY => "retry",
        CANCELLED => "cancelled",
        _ => "unknown",
    }
}

/// The worse of two results, in Buildbot's order
/// SKIPPED < SUCCESS < WARNINGS < FAILURE < EXCEPTION < RETRY < CANCELLED.
pub fn worst(a: i32, b: i32) -> i32 {
    if rank(a) >= rank(b) { a } else { b }
}

/// Every result, least bad first: [`worst`] keeps the later of two. The data
/// layer ranks stored results in SQL with the same order.
pub const ORDER: [i32; 7] = [
    SKIPPED, SUCCESS, WARNINGS, FAILURE, EXCEPTION, RETRY, CANCELLED,
];

/// A result's place in [`ORDER`]; an unknown code counts as the least bad.
pub fn rank(result: i32) -> usize {
    ORDER.iter().position(|&x| x == result).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_follows_buildbot_order() {
        assert_eq!(worst(SUCCESS, SKIPPED), SUCCESS);
        assert_eq!(worst(WARNINGS, FAILURE), FAILURE);
        assert_eq!(worst(CANCELLED, FAILURE), CANCELLED);
        assert_eq!(worst(EXCEPTION, RETRY), RETRY);
        assert_eq!(name(RETRY), "retry");
    }
}
