//! Masterminds/semver v3 ranges over git tags, the dialect of Flux's `ref.semver`.
//!
//! The `semver` crate's `VersionReq` speaks Cargo's dialect instead (no `||`, no hyphen
//! ranges, a bare `1.2` meaning `^1.2`, other prerelease rules), so the same range text would
//! pick a different tag than Flux does. Everything here follows Masterminds v3.4, odd corners
//! included, because a source moved over from Flux has to keep resolving to the same tag.
//!
//! # Prereleases
//!
//! A tag with a prerelease (`1.2.0-rc.1`) is only a candidate for an AND group (the part
//! between `||`s) in which at least one constraint names a prerelease itself: `>=1.0.0-0 <2`
//! matches `1.5.0-rc.1`, `>=1.0.0 <2` does not. Masterminds up to v3.3 asked this of every
//! constraint in the group; v3.4 made one enough, and that is what is implemented. The opt-in
//! does not cross `||`: in `>=1.0.0-0 <1.1 || >=2`, `2.1.0-rc.1` is rejected.
//!
//! Once admitted, a prerelease is compared by plain semver precedence, whatever its
//! major.minor.patch: `^1.0.0-alpha` matches `1.0.5-beta`, and `>=1.0.0-0 <2.0.0` even
//! matches `2.0.0-rc.1` (it precedes `2.0.0`). Node's semver would reject both.

use std::cmp::Ordering;
use std::fmt;

/// A tag read as a version. Flux only considers tags that are strict semver once one
/// leading `v` is dropped, so anything else is "not a candidate" rather than an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    inner: semver::Version,
}

impl Version {
    /// `None` if the tag is not a three-part semver (`v1.2` and `1.2.3.4` are rejected;
    /// `v1.2.3`, `1.2.3-rc.1+build` accepted). Leading zeros are rejected as in semver 2.0,
    /// because Flux parses tags strictly (unlike the lenient constraint side).
    pub fn parse_tag(tag: &str) -> Option<Version> {
        let text = tag.strip_prefix('v').unwrap_or(tag);
        semver::Version::parse(text)
            .ok()
            .map(|inner| Version { inner })
    }

    /// Precedence per semver 2.0. Build metadata is ignored, which is what makes `1.0.0+a`
    /// and `1.0.0+b` a tie that the caller settles by commit time.
    pub fn cmp_precedence(&self, other: &Version) -> Ordering {
        self.inner.cmp_precedence(&other.inner)
    }

    fn is_prerelease(&self) -> bool {
        !self.inner.pre.is_empty()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

/// A parsed range. Parse it once when the configuration is read, so that a typo is reported
/// at load time and not on every poll.
#[derive(Debug, Clone)]
pub struct Range {
    text: String,
    alternatives: Vec<Alternative>,
}

/// The text always comes along so that the message can be shown on its own.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid semver range {range:?}: {reason}")]
pub struct RangeError {
    pub range: String,
    /// [`Problem`]'s sentence: configuration validation reports it at the field's position.
    pub reason: String,
}

/// What is wrong with a range, as Masterminds' parser would refuse it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Problem {
    #[error("empty range")]
    Empty,
    #[error("empty alternative next to `||`")]
    EmptyAlternative,
    #[error("operator {0:?} is not followed by a version")]
    OperatorWithoutVersion(String),
    #[error("unexpected comma")]
    UnexpectedComma,
    #[error("hyphen range starting at {0:?} must come first in its alternative or after a comma")]
    MisplacedHyphenRange(String),
    #[error("hyphen range {0:?} - has no upper bound")]
    HyphenWithoutUpperBound(String),
    #[error(
        "stray `-`: a hyphen range needs a bare version on each side, with spaces around the `-`"
    )]
    StrayHyphen,
    #[error("trailing comma")]
    TrailingComma,
    #[error("{item:?} is not a valid constraint: {why}")]
    Constraint { item: String, why: &'static str },
}

impl Range {
    /// An empty or blank range is an error, as in Masterminds: its single-constraint parser
    /// reads `""` as `*`, but `NewConstraint`, which Flux calls, rejects it. Write `*` to
    /// accept any release.
    pub fn parse(s: &str) -> Result<Range, RangeError> {
        let fail = |reason: Problem| RangeError {
            range: s.to_string(),
            reason: reason.to_string(),
        };
        if s.chars().all(is_space) {
            return Err(fail(Problem::Empty));
        }
        let alternatives = s
            .split("||")
            .map(parse_alternative)
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        Ok(Range {
            text: s.to_string(),
            alternatives,
        })
    }

    pub fn matches(&self, v: &Version) -> bool {
        self.alternatives.iter().any(|alt| {
            (alt.admits_prerelease || !v.is_prerelease())
                && alt.comparators.iter().all(|c| c.matches(&v.inner))
        })
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Of the given tag names, those that parse as versions and match `range`, keeping only the
/// ones with the highest precedence (several when they differ only in build metadata, e.g.
/// `1.0.0+a` and `v1.0.0+b`, or `v1.0.0` and `1.0.0`). The caller breaks such ties by commit
/// time, which this module cannot see. Order of the result: as in the input.
pub fn highest_matching<'a>(
    range: &Range,
    tags: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    let matched: Vec<(&'a str, Version)> = tags
        .into_iter()
        .filter_map(|tag| {
            let v = Version::parse_tag(tag)?;
            range.matches(&v).then_some((tag, v))
        })
        .collect();
    let Some(best) = matched
        .iter()
        .map(|(_, v)| v)
        .max_by(|a, b| a.cmp_precedence(b))
    else {
        return Vec::new();
    };
    matched
        .iter()
        .filter(|(_, v)| v.cmp_precedence(best) == Ordering::Equal)
        .map(|(tag, _)| *tag)
        .collect()
}

/// One `||` alternative: constraints that must all hold.
#[derive(Debug, Clone)]
struct Alternative {
    comparators: Vec<Comparator>,
    /// See the module docs: one constraint naming a prerelease opens the whole group.
    admits_prerelease: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// No operator or `=`: exact for a full version, tilde-like for a partial one.
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Tilde,
    Caret,
}

/// The first part of the constraint version that was a wildcard or left out. From there on
/// the bound reads as zero, and the operators look at `Wild` to widen themselves, each in
/// its own way (Masterminds' `dirty`, `minorDirty` and `patchDirty` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wild {
    None,
    /// `1.2`, `1.2.x`.
    Patch,
    /// `1`, `1.x`.
    Minor,
    /// `*`, `x`: the bound is `0.0.0`, but it is neither `Minor` nor `Patch`, which gives
    /// `<=*`, `^*` and `!=*` their surprising Masterminds meanings (see the tests).
    Major,
}

#[derive(Debug, Clone)]
struct Comparator {
    op: Op,
    /// Wildcards read as zero; the prerelease is kept; build metadata is dropped, since no
    /// comparison looks at it.
    bound: semver::Version,
    wild: Wild,
}

impl Comparator {
    /// The prerelease gate is applied per group by the caller; this is the comparison alone.
    fn matches(&self, v: &semver::Version) -> bool {
        let b = &self.bound;
        let ord = v.cmp_precedence(b);
        match self.op {
            Op::Eq if self.wild == Wild::None => ord == Ordering::Equal,
            Op::Eq => self.tilde(v, ord),
            Op::Ne => match self.wild {
                Wild::None | Wild::Major => ord != Ordering::Equal,
                Wild::Minor => v.major != b.major,
                Wild::Patch => v.major != b.major || v.minor != b.minor || v.pre != b.pre,
            },
            Op::Gt => match self.wild {
                Wild::None | Wild::Major => ord == Ordering::Greater,
                // `>1` is `>=2.0.0` and `>1.2` is `>=1.3.0`, not `>1.0.0` / `>1.2.0`.
                Wild::Minor => v.major > b.major,
                Wild::Patch => (v.major, v.minor) > (b.major, b.minor),
            },
            // `<` and `>=` need no widening: the zero-filled bound is already right.
            Op::Lt => ord == Ordering::Less,
            Op::Ge => ord != Ordering::Less,
            Op::Le => match self.wild {
                Wild::None => ord != Ordering::Greater,
                // `<=1` is `<2.0.0` and `<=1.2` is `<1.3.0`.
                Wild::Minor => v.major <= b.major,
                Wild::Patch | Wild::Major => (v.major, v.minor) <= (b.major, b.minor),
            },
            Op::Tilde => self.tilde(v, ord),
            Op::Caret => self.caret(v, ord),
        }
    }

    /// `~1.2.3` and `~1.2` stay within 1.2, `~1` within 1.
    fn tilde(&self, v: &semver::Version, ord: Ordering) -> bool {
        let b = &self.bound;
        if ord == Ordering::Less {
            return false;
        }
        // `~0.0.0` and `~*` anchor nothing; Masterminds reads them as `>=0.0.0`.
        if matches!(self.wild, Wild::None | Wild::Major) && (b.major, b.minor, b.patch) == (0, 0, 0)
        {
            return true;
        }
        v.major == b.major && (self.wild == Wild::Minor || v.minor == b.minor)
    }

    /// The leftmost non-zero part given is held fixed: `^1.2.3` within 1, `^0.2.3` within
    /// 0.2, `^0.0.3` exactly 0.0.3; a part left out counts as given-but-free (`^0` within 0,
    /// `^0.0` within 0.0).
    fn caret(&self, v: &semver::Version, ord: Ordering) -> bool {
        let b = &self.bound;
        if ord == Ordering::Less {
            false
        } else if b.major > 0 || self.wild == Wild::Minor {
            v.major == b.major
        } else if v.major > 0 {
            false
        } else if b.minor > 0 || self.wild == Wild::Patch {
            v.minor == b.minor
        } else if v.minor > 0 {
            false
        } else {
            v.patch == b.patch
        }
    }
}

/// What Go's `\s` matches, which is what Masterminds splits on (no vertical tab, no Unicode).
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c')
}

/// A version text runs until whitespace or a comma; whatever else it swallows (`>=1<2`) is
/// then rejected as not a version, as Masterminds rejects it.
fn split_word(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| is_space(c) || c == ',').unwrap_or(s.len());
    s.split_at(end)
}

/// Two-character operators first, so that `>=` is not read as `>` followed by `=1`.
fn split_op(s: &str) -> (Option<Op>, &str) {
    const OPS: [(&str, Op); 11] = [
        ("!=", Op::Ne),
        (">=", Op::Ge),
        ("=>", Op::Ge),
        ("<=", Op::Le),
        ("=<", Op::Le),
        ("~>", Op::Tilde),
        ("=", Op::Eq),
        (">", Op::Gt),
        ("<", Op::Lt),
        ("~", Op::Tilde),
        ("^", Op::Caret),
    ];
    OPS.iter()
        .find_map(|(token, op)| s.strip_prefix(token).map(|rest| (Some(*op), rest)))
        .unwrap_or((None, s))
}

fn parse_alternative(text: &str) -> Result<Alternative, Problem> {
    let mut rest = text.trim_start_matches(is_space);
    if rest.is_empty() {
        return Err(Problem::EmptyAlternative);
    }
    let mut comparators = Vec::new();
    // Masterminds rewrites `a - b` into `>= a, <= b` textually and, doing so, swallows the
    // whitespace in front of `a`. A hyphen range therefore only parses where no separator is
    // needed: first in its group, after a comma, or right after another hyphen range.
    let mut range_may_start = true;
    loop {
        let (op, after_op) = split_op(rest);
        let (word, after_word) = split_word(after_op.trim_start_matches(is_space));
        let item = &rest[..rest.len() - after_word.len()];
        if word.is_empty() {
            return Err(match op {
                Some(_) => Problem::OperatorWithoutVersion(item.to_string()),
                None => Problem::UnexpectedComma,
            });
        }
        let spaced = after_word.trim_start_matches(is_space);
        let hyphen = if op.is_none() && spaced.len() < after_word.len() {
            spaced
                .strip_prefix('-')
                .filter(|upper| upper.starts_with(is_space))
        } else {
            None
        };
        let after = if let Some(upper) = hyphen {
            if !range_may_start {
                return Err(Problem::MisplacedHyphenRange(word.to_string()));
            }
            let (upper, after_upper) = split_word(upper.trim_start_matches(is_space));
            if upper.is_empty() {
                return Err(Problem::HyphenWithoutUpperBound(word.to_string()));
            }
            comparators.push(parse_comparator(Op::Ge, word, word)?);
            comparators.push(parse_comparator(Op::Le, upper, upper)?);
            range_may_start = true;
            after_upper
        } else {
            if op.is_none() && word == "-" {
                return Err(Problem::StrayHyphen);
            }
            comparators.push(parse_comparator(op.unwrap_or(Op::Eq), word, item)?);
            range_may_start = false;
            after_word
        };
        let trimmed = after.trim_start_matches(is_space);
        if trimmed.is_empty() {
            break;
        }
        if let Some(next) = trimmed.strip_prefix(',') {
            rest = next.trim_start_matches(is_space);
            if rest.is_empty() {
                return Err(Problem::TrailingComma);
            }
            range_may_start = true;
        } else {
            // `split_word` only stops at whitespace or a comma, so whitespace separated them.
            rest = trimmed;
        }
    }
    let admits_prerelease = comparators.iter().any(|c| !c.bound.pre.is_empty());
    Ok(Alternative {
        comparators,
        admits_prerelease,
    })
}

/// `word` is the version text; `item` is what the user wrote for this constraint, for errors.
fn parse_comparator(op: Op, word: &str, item: &str) -> Result<Comparator, Problem> {
    let bad = |why: &'static str| Problem::Constraint {
        item: item.to_string(),
        why,
    };
    if word.starts_with(['<', '>', '=', '!', '~', '^']) {
        return Err(bad("unknown operator"));
    }
    let (main, build) = match word.split_once('+') {
        Some((main, build)) => (main, Some(build)),
        None => (word, None),
    };
    if let Some(build) = build {
        if build.is_empty() || semver::BuildMetadata::new(build).is_err() {
            return Err(bad("invalid build metadata"));
        }
    }
    let (core, pre) = match main.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (main, None),
    };
    let pre = match pre {
        None => semver::Prerelease::EMPTY,
        Some("") => return Err(bad("empty prerelease")),
        Some(pre) => semver::Prerelease::new(pre).map_err(|_| bad("invalid prerelease"))?,
    };
    let core = core.strip_prefix('v').unwrap_or(core);
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() > 3 {
        return Err(bad("more than three version parts"));
    }
    let mut numbers = [0u64; 3];
    let mut wild = Wild::None;
    for (i, part) in parts.iter().enumerate() {
        let is_wildcard = matches!(*part, "x" | "X" | "*");
        if wild != Wild::None {
            // Masterminds ignores whatever follows a wildcard (`1.x.5` is `1.x`), as long as
            // it looks like a version part.
            let plausible = part
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, 'x' | 'X' | '*'));
            if part.is_empty() || !plausible {
                return Err(bad("not a version"));
            }
        } else if is_wildcard {
            wild = [Wild::Major, Wild::Minor, Wild::Patch][i];
        } else if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("not a version"));
        } else {
            // Leading zeros are accepted: Masterminds v3.4 coerces them in constraints.
            numbers[i] = part.parse().map_err(|_| bad("version number too large"))?;
        }
    }
    if wild == Wild::None {
        wild = match parts.len() {
            1 => Wild::Minor,
            2 => Wild::Patch,
            _ => Wild::None,
        };
    }
    let [major, minor, patch] = numbers;
    Ok(Comparator {
        op,
        bound: semver::Version {
            major,
            minor,
            patch,
            pre,
            build: semver::BuildMetadata::EMPTY,
        },
        wild,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str) -> Range {
        Range::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn tag(text: &str) -> Version {
        Version::parse_tag(text).unwrap_or_else(|| panic!("{text:?} should parse as a tag"))
    }

    /// Each case is (range, version, expected); failures name the case.
    fn check_all(cases: &[(&str, &str, bool)]) {
        let wrong: Vec<String> = cases
            .iter()
            .filter(|(r, v, want)| range(r).matches(&tag(v)) != *want)
            .map(|(r, v, want)| format!("{r:?} vs {v:?}: expected {want}"))
            .collect();
        assert!(wrong.is_empty(), "wrong results:\n{}", wrong.join("\n"));
    }

    fn reason(text: &str) -> String {
        match Range::parse(text) {
            Ok(r) => panic!("{text:?} should be rejected, parsed as {r:?}"),
            Err(e) => {
                assert_eq!(e.range, text);
                e.reason
            }
        }
    }

    #[test]
    fn parse_tag_accepts_three_part_semver_with_optional_v() {
        for (text, shown) in [
            ("1.2.3", "1.2.3"),
            ("v1.2.3", "1.2.3"),
            ("0.0.0", "0.0.0"),
            ("1.2.3-rc.1+build", "1.2.3-rc.1+build"),
            (
                "v10.20.30-alpha-1.beta+exp.sha.5114f85",
                "10.20.30-alpha-1.beta+exp.sha.5114f85",
            ),
            ("1.0.0+001", "1.0.0+001"),
            ("18446744073709551615.0.0", "18446744073709551615.0.0"),
        ] {
            assert_eq!(tag(text).to_string(), shown, "{text}");
        }
    }

    #[test]
    fn parse_tag_rejects_everything_else() {
        for text in [
            "",
            "v",
            "v1.2",
            "1.2",
            "1",
            "1.2.3.4",
            "v1.2.3.4",
            "V1.2.3",
            "vv1.2.3",
            " 1.2.3",
            "1.2.3 ",
            "01.2.3",
            "1.02.3",
            "1.2.03",
            "1.2.3-01",
            "1.2.3-",
            "1.2.3+",
            "1.2.3-beta..1",
            "1.2.3-be_ta",
            "1.2.x",
            "release-1.2.3",
            "latest",
            "18446744073709551616.0.0",
        ] {
            assert_eq!(Version::parse_tag(text), None, "{text:?}");
        }
    }

    #[test]
    fn precedence_follows_semver_and_ignores_build_metadata() {
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.2.0",
            "1.10.0",
            "2.0.0",
        ];
        for pair in chain.windows(2) {
            assert_eq!(
                tag(pair[0]).cmp_precedence(&tag(pair[1])),
                Ordering::Less,
                "{pair:?}"
            );
            assert_eq!(
                tag(pair[1]).cmp_precedence(&tag(pair[0])),
                Ordering::Greater,
                "{pair:?}"
            );
        }
        let (a, b) = (tag("1.0.0+a"), tag("v1.0.0+b"));
        assert_eq!(a.cmp_precedence(&b), Ordering::Equal);
        assert_ne!(a, b, "equal precedence, yet different versions");
        assert_eq!(tag("v1.0.0"), tag("1.0.0"));
    }

    #[test]
    fn exact_versions() {
        check_all(&[
            ("1.2.3", "1.2.3", true),
            ("1.2.3", "v1.2.3", true),
            ("1.2.3", "1.2.3+build.7", true),
            ("1.2.3", "1.2.4", false),
            ("1.2.3", "1.2.2", false),
            ("=1.2.3", "1.2.3", true),
            ("= 1.2.3", "1.2.3", true),
            ("=1.2.3", "1.3.0", false),
            ("v1.2.3", "1.2.3", true),
            ("=v1.2.3", "1.2.3", true),
            ("1.2.3+meta", "1.2.3", true),
            ("1.2.3-beta.1", "1.2.3-beta.1", true),
            ("1.2.3-beta.1", "1.2.3-beta.2", false),
            ("1.2.3-beta.1", "1.2.3", false),
            ("=0", "1.0.0", false),
            ("=2.0", "2.0.1", true),
            ("=2.0", "2.1.0", false),
            ("01.02.03", "1.2.3", true),
        ]);
    }

    #[test]
    fn partial_versions_and_wildcards() {
        check_all(&[
            ("1.2", "1.2.0", true),
            ("1.2", "1.2.99", true),
            ("1.2", "1.3.0", false),
            ("1.2", "1.1.9", false),
            ("1.2.x", "1.2.7", true),
            ("1.2.x", "1.3.0", false),
            ("1.2.*", "1.2.7", true),
            ("1.2.X", "1.2.7", true),
            ("1", "1.0.0", true),
            ("1", "1.9.9", true),
            ("1", "2.0.0", false),
            ("1", "0.9.9", false),
            ("1.x", "1.4.0", true),
            ("1.x", "2.0.0", false),
            ("1.x.x", "1.4.0", true),
            ("1.*", "1.4.0", true),
            // What follows a wildcard is ignored.
            ("1.x.5", "1.0.0", true),
            ("1.x.5", "2.0.5", false),
            ("0", "0.5.0", true),
            ("0", "1.0.0", false),
            ("0.x.x", "1.2.3", false),
            ("0.0.x", "0.0.9", true),
            ("0.0.x", "0.1.0", false),
            ("*", "0.0.0", true),
            ("*", "1.2.3", true),
            ("*", "999.0.0", true),
            ("x", "4.5.6", true),
            ("X", "4.5.6", true),
            ("*.*.*", "4.5.6", true),
            ("v1.x", "1.5.0", true),
        ]);
    }

    #[test]
    fn not_equal() {
        check_all(&[
            ("!=1.2.3", "1.2.3", false),
            ("!=1.2.3", "1.2.3+build", false),
            ("!=1.2.3", "1.2.4", true),
            ("!= 1.2.3", "1.2.4", true),
            // A partial version excludes everything it covers.
            ("!=4.1", "4.1.0", false),
            ("!=4.1", "4.1.1", false),
            ("!=4.1", "4.2.0", true),
            ("!=4.1", "5.1.0", true),
            ("!=4.1.x", "4.1.9", false),
            ("!=4.1.x", "4.2.0", true),
            ("!=4.x", "4.1.0", false),
            ("!=4.x", "5.1.0", true),
            ("!=4.x", "3.9.0", true),
            // With a prerelease, only that exact prerelease line is excluded.
            ("!=4.1-alpha", "4.1.0", true),
            ("!=4.1-alpha", "4.1.0-alpha", false),
            ("!=4.1-alpha", "4.1.1-alpha", false),
            ("!=4.1-alpha", "4.1.1-beta", true),
            // `!=*` reads as `!=0.0.0` in Masterminds.
            ("!=*", "0.0.0", false),
            ("!=*", "0.0.1", true),
            ("!=*", "3.0.0", true),
        ]);
    }

    #[test]
    fn greater_than() {
        check_all(&[
            (">1.2.3", "1.2.4", true),
            (">1.2.3", "1.2.3", false),
            (">1.2.3", "1.2.3+later", false),
            (">1.2.3", "1.2.2", false),
            ("> 1.2.3", "2.0.0", true),
            // A partial bound excludes all it covers: `>1.2` is `>=1.3.0`, `>1` is `>=2.0.0`.
            (">1.2", "1.2.0", false),
            (">1.2", "1.2.9", false),
            (">1.2", "1.3.0", true),
            (">1.2", "2.0.0", true),
            (">1.2", "0.9.0", false),
            (">1.2.x", "1.2.9", false),
            (">1.2.x", "1.3.0", true),
            (">1", "1.9.9", false),
            (">1", "2.0.0", true),
            (">1.x", "1.9.9", false),
            (">1.x", "2.0.0", true),
            (">11.1", "11.1.1", false),
            (">11.1", "11.2.1", true),
            (">0", "0.5.0", false),
            (">0", "1.0.0", true),
            // `>*` reads as `>0.0.0`.
            (">*", "0.0.0", false),
            (">*", "0.0.1", true),
            (">*", "7.0.0", true),
        ]);
    }

    #[test]
    fn less_than() {
        check_all(&[
            ("<1.2.3", "1.2.2", true),
            ("<1.2.3", "1.2.3", false),
            ("< 1.2.3", "0.1.0", true),
            // `<` needs no widening: `<1.2` is `<1.2.0`, `<1` is `<1.0.0`.
            ("<1.2", "1.1.9", true),
            ("<1.2", "1.2.0", false),
            ("<1.2.x", "1.1.9", true),
            ("<1.2.x", "1.2.1", false),
            ("<1", "0.9.9", true),
            ("<1", "1.0.0", false),
            ("<1.x", "0.9.9", true),
            ("<1.x", "1.1.1", false),
            ("<11", "0.1.0", true),
            ("<11", "11.1.0", false),
            ("<*", "0.0.0", false),
            ("<*", "1.0.0", false),
        ]);
    }

    #[test]
    fn greater_or_equal() {
        check_all(&[
            (">=1.2.3", "1.2.3", true),
            (">=1.2.3", "1.2.2", false),
            (">=1.2.3", "5.0.0", true),
            (">= 1.2", "1.2.0", true),
            (">=1.2", "1.1.9", false),
            ("=>1.2", "1.2.0", true),
            ("=> 1.2", "1.1.0", false),
            (">=1", "1.0.0", true),
            (">=1", "0.9.0", false),
            (">=11.1", "11.0.2", false),
            (">=*", "0.0.0", true),
            (">=*", "9.9.9", true),
        ]);
    }

    #[test]
    fn less_or_equal() {
        check_all(&[
            ("<=1.2.3", "1.2.3", true),
            ("<=1.2.3", "1.2.4", false),
            ("<=1.2.3", "0.0.1", true),
            // A partial bound includes all it covers: `<=1.2` is `<1.3.0`, `<=1` is `<2.0.0`.
            ("<=1.2", "1.2.99", true),
            ("<=1.2", "1.3.0", false),
            ("<=1.2", "0.9.0", true),
            ("<=4.5", "3.7.0", true),
            ("<=4.5", "4.6.3", false),
            ("<= 1.2.x", "1.2.500", true),
            ("<=1.1.x", "1.2.500", false),
            ("=<1.2", "1.2.5", true),
            ("=< 1.2", "1.3.0", false),
            ("<=1", "1.99.0", true),
            ("<=1", "2.0.0", false),
            ("<=1.x", "1.1.0", true),
            ("<=2.x", "3.0.0", false),
            ("<=11", "11.2.3", true),
            ("<=11", "12.2.3", false),
            // `<=*` is a Masterminds oddity: it only admits 0.0.z.
            ("<=*", "0.0.5", true),
            ("<=*", "0.1.0", false),
            ("<=*", "1.0.0", false),
        ]);
    }

    #[test]
    fn tilde() {
        check_all(&[
            ("~1.2.3", "1.2.3", true),
            ("~1.2.3", "1.2.9", true),
            ("~1.2.3", "1.2.2", false),
            ("~1.2.3", "1.3.0", false),
            ("~1.2", "1.2.0", true),
            ("~1.2", "1.2.9", true),
            ("~1.2", "1.3.0", false),
            ("~1.2", "1.1.9", false),
            ("~1.2.x", "1.2.4", true),
            ("~1", "1.0.0", true),
            ("~1", "1.9.9", true),
            ("~1", "2.0.0", false),
            ("~1.x", "1.3.5", true),
            ("~1.x", "2.1.1", false),
            ("~0.2.3", "0.2.5", true),
            ("~0.2.3", "0.3.0", false),
            ("~0", "0.9.0", true),
            ("~0", "1.0.0", false),
            ("~0.0", "0.0.9", true),
            ("~0.0", "0.1.0", false),
            ("~>1.2.3", "1.2.9", true),
            ("~>1.2.3", "1.3.0", false),
            ("~> 1.2", "1.2.0", true),
            ("~ 1.2", "1.2.0", true),
            // No anchor at all: Masterminds reads these as `>=0.0.0`.
            ("~*", "2.1.1", true),
            ("~0.0.0", "1.2.3", true),
        ]);
    }

    #[test]
    fn caret() {
        check_all(&[
            ("^1.2.3", "1.2.3", true),
            ("^1.2.3", "1.8.9", true),
            ("^1.2.3", "1.2.2", false),
            ("^1.2.3", "2.0.0", false),
            ("^1.2", "1.2.0", true),
            ("^1.2", "1.9.0", true),
            ("^1.2", "1.1.0", false),
            ("^1", "1.8.9", true),
            ("^1", "2.0.0", false),
            ("^1.x", "1.1.1", true),
            ("^1.x", "2.1.1", false),
            ("^2.x", "1.1.1", false),
            ("^0.2.3", "0.2.3", true),
            ("^0.2.3", "0.2.9", true),
            ("^0.2.3", "0.3.0", false),
            ("^0.2.3", "0.2.2", false),
            ("^0.2", "0.2.5", true),
            ("^0.2", "0.3.0", false),
            ("^0.0.3", "0.0.3", true),
            ("^0.0.3", "0.0.4", false),
            ("^0.0.3", "0.1.3", false),
            ("^0.0", "0.0.3", true),
            ("^0.0", "0.1.0", false),
            ("^0.0", "1.0.0", false),
            ("^0", "0.2.3", true),
            ("^0", "1.0.0", false),
            ("^0.0.0", "0.0.0", true),
            ("^0.0.0", "1.2.3", false),
            // Masterminds' comment says `^*` is "any", its code admits only 0.0.0.
            ("^*", "0.0.0", true),
            ("^*", "0.0.1", false),
            ("^*", "1.2.3", false),
            ("^ 1.2", "1.5.0", true),
        ]);
    }

    #[test]
    fn hyphen_ranges() {
        check_all(&[
            ("1.2 - 1.4.5", "1.2.0", true),
            ("1.2 - 1.4.5", "1.4.5", true),
            ("1.2 - 1.4.5", "1.4.6", false),
            ("1.2 - 1.4.5", "1.1.9", false),
            // A partial upper bound covers its whole minor or major.
            ("1.2.3 - 2.3", "2.3.99", true),
            ("1.2.3 - 2.3", "2.4.0", false),
            ("1.2.3 - 2.3", "1.2.2", false),
            ("1 - 2", "2.9.9", true),
            ("1 - 2", "3.0.0", false),
            ("1.1 - 2", "1.1.1", true),
            ("1.5.0 - 4.5", "3.7.0", true),
            ("v1.2 - v1.4", "1.4.9", true),
            ("1.2\t-\t1.4", "1.3.0", true),
            ("1.0.0 - 2.0.0 <=2.0.0", "1.5.0", true),
            ("1.0.0 - 2.0.0, !=1.5.0", "1.5.0", false),
            ("1.0.0 - 2.0.0, !=1.5.0", "1.6.0", true),
            (">=1.0, 1.2 - 1.4", "1.3.0", true),
            (">=1.0 , 1.2 - 1.4", "1.5.0", false),
            ("1.0 - 1.2 || 3 - 4", "3.5.0", true),
            ("1.0 - 1.2 || 3 - 4", "2.0.0", false),
            // Two whitespace-separated ranges are accepted (and here leave nothing).
            ("2 - 3 4.0.0 - 5.1", "3.0.0", false),
            ("2 - 3 4.0.0 - 5.1", "4.5.0", false),
            // No spaces around the hyphen: a prerelease, not a range.
            ("1.1-3", "1.1.2", true),
            ("1.1-3", "4.3.2", false),
        ]);
    }

    #[test]
    fn hyphen_range_placement_errors() {
        // Masterminds' textual rewrite swallows the separator in front of the range.
        assert!(reason(">=1.0 1.2 - 1.4").contains("must come first"));
        assert!(reason("!=1.3.0 1.2 - 1.4").contains("must come first"));
        assert!(reason(">=1.2 - 1.4").starts_with("stray `-`"));
        assert!(reason("1.2 - 1.4 - 1.6").starts_with("stray `-`"));
        assert!(reason("- 1.2").starts_with("stray `-`"));
        assert!(reason("1.2 -").starts_with("stray `-`"));
        assert!(reason("1.2 - ").contains("has no upper bound"));
        assert!(reason("1.2 - , 1.4").contains("has no upper bound"));
        assert!(reason("1.2 - >=1.4").contains("unknown operator"));
        assert!(reason("1.2 -1.4").contains("not a valid constraint"));
        assert!(reason("1.2- 1.4").contains("not a valid constraint"));
    }

    #[test]
    fn and_groups_with_spaces_and_commas() {
        check_all(&[
            (">=1.0.0 <2.0.0", "1.5.0", true),
            (">=1.0.0 <2.0.0", "2.0.0", false),
            (">=1.0.0 <2.0.0", "0.9.0", false),
            (">= 1.2, < 3.0.0", "2.9.9", true),
            (">= 1.2, < 3.0.0", "3.0.0", false),
            (">1.1, <2", "1.1.1", false),
            (">1.1, <2", "1.2.1", true),
            (">1.1    <3", "4.3.2", false),
            (">1.1,<3", "2.0.0", true),
            (">1.1 ,<3", "2.0.0", true),
            (">1.1\t,\n<3", "2.0.0", true),
            (">=1.1, <2, !=1.2.3", "1.2.3", false),
            (">=1.1 <2 !=1.2.3", "1.2.4", true),
            ("  >=1.0   ", "1.0.0", true),
            ("12.3.34 ~1.2.3", "12.3.34", false),
        ]);
    }

    #[test]
    fn alternatives() {
        check_all(&[
            (">=1.1, <2, !=1.2.3 || > 3", "4.1.2", true),
            (">=1.1, <2, !=1.2.3 || > 3", "3.1.2", false),
            (">=1.1, <2, !=1.2.3 || > 3", "3.0.0", false),
            (">=1.1, <2, !=1.2.3 || > 3", "1.2.3", false),
            (">=1.1, <2, !=1.2.3 || > 3", "1.2.4", true),
            (">=1.1 <2 !=1.2.3 || >= 3", "3.0.0", true),
            ("1.0||2.0", "2.0.5", true),
            ("1.0 || 2.0", "1.0.5", true),
            ("1.0 || 2.0", "1.5.0", false),
            ("~1.2 || ^3 || 5.x", "5.9.0", true),
            ("~1.2 || ^3 || 5.x", "4.0.0", false),
        ]);
    }

    #[test]
    fn prereleases_need_a_prerelease_in_the_group() {
        check_all(&[
            (">=1.0.0", "1.2.0-rc.1", false),
            (">=1.0.0-0", "1.2.0-rc.1", true),
            (">=1.0.0-0", "1.2.0", true),
            (">=1.0.0-0", "0.9.0-rc.1", false),
            ("*", "1.2.3-alpha.1", false),
            ("*-0", "1.2.3-alpha.1", true),
            ("1.x", "1.3.5-beta", false),
            ("~1.1", "1.1.1-alpha", false),
            ("~1.1-alpha", "1.1.1-beta", true),
            ("~1.2.3-beta.2", "1.2.3-beta.4", true),
            ("~1.2.3-beta.2", "1.2.4-beta.2", true),
            ("~1.2.3-beta.2", "1.3.4-beta.2", false),
            ("~1.1.1-beta", "1.1.1-alpha", false),
            ("^1.2.0", "1.2.1-alpha.1", false),
            ("^1.2.0-alpha.0", "1.2.1-alpha.1", true),
            ("^1.2.0-alpha.2", "1.2.0-alpha.1", false),
            // Not limited to the bound's own major.minor.patch, unlike node's semver.
            ("^1.0.0-alpha", "1.0.5-beta", true),
            ("^1.0.0-alpha", "2.0.0-beta", false),
            ("^0.2.3-beta.2", "0.2.4-beta.2", true),
            ("^0.2.3-beta.2", "0.3.4-beta.2", false),
            ("<=1.1", "0.1.0-alpha", false),
            ("<=1.1-a", "0.1.0-alpha", true),
            ("<0-z", "0.0.0-alpha", true),
            ("<0", "0.0.0-alpha", false),
            (">0.0.0-0", "0.0.0-alpha", true),
            (">0-0", "0.0.1-alpha", false),
            (">1.2.3-alpha.1", "1.2.3-alpha.2", true),
            (">1.2.3-alpha.1", "1.3.3-alpha.2", true),
            (">=1.2.0-beta.2", "1.2.0-beta.1", false),
            ("!=4.1", "5.1.0-alpha.1", false),
            ("1.2.3-beta", "1.2.3-beta+build", true),
        ]);
    }

    #[test]
    fn one_prerelease_bound_opens_its_whole_group_but_not_other_alternatives() {
        check_all(&[
            (">=1.0.0-0 <2.0.0", "1.5.0-rc.1", true),
            (">=1.0.0-0, <2.0.0", "1.5.0-rc.1", true),
            (">1.0.0-beta.1 <2", "1.0.0-beta.2", true),
            // Plain precedence once admitted: 2.0.0-rc.1 precedes 2.0.0.
            (">=1.0.0-0 <2.0.0", "2.0.0-rc.1", true),
            ("1.0.0-alpha - 2.0.0", "1.5.0-beta", true),
            (">=1.0.0 <2.0.0", "1.5.0-rc.1", false),
            (">=1.0.0-0 <1.1.0 || >=2", "1.0.5-rc.1", true),
            (">=1.0.0-0 <1.1.0 || >=2", "2.1.0-rc.1", false),
            (">=1.0.0-0 <1.1.0 || >=2", "2.1.0", true),
        ]);
    }

    #[test]
    fn invalid_ranges_are_rejected_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "empty range"),
            ("   ", "empty range"),
            ("1.0 ||", "empty alternative"),
            ("|| 1.0", "empty alternative"),
            ("1.0 |||| 2.0", "empty alternative"),
            ("1.0 ||| 2.0", "not a valid constraint"),
            ("1 | 2", "not a valid constraint"),
            (">=foo", "not a valid constraint"),
            ("foo", "not a valid constraint"),
            ("BAR >= 1.2.3", "not a valid constraint"),
            ("1.2.3.4", "more than three version parts"),
            ("12.3.4.1234", "more than three version parts"),
            (">>1", "unknown operator"),
            ("==1.2.3", "unknown operator"),
            ("!1.0", "unknown operator"),
            ("<>1.0", "unknown operator"),
            ("~ >1.2", "unknown operator"),
            ("12.3.34~ 1.2.3", "not a valid constraint"),
            (">=1.0<2.0", "not a valid constraint"),
            (">=", "is not followed by a version"),
            (">= , 1.0", "is not followed by a version"),
            (">=1,", "trailing comma"),
            (">=1, || 2", "trailing comma"),
            (",>=1", "unexpected comma"),
            (">=1,,<2", "unexpected comma"),
            ("1..2", "not a version"),
            ("1.2.", "not a version"),
            ("1.2x", "not a version"),
            ("xx", "not a version"),
            ("1.x.y", "not a version"),
            ("V1.2.3", "not a version"),
            ("v", "not a version"),
            ("1.2.3-01", "invalid prerelease"),
            ("1.2.3-beta..1", "invalid prerelease"),
            ("1.2.3-", "empty prerelease"),
            ("1.2.3+", "invalid build metadata"),
            ("1.2.3+a..b", "invalid build metadata"),
            ("18446744073709551616", "version number too large"),
        ];
        for (text, expected) in cases {
            let got = reason(text);
            assert!(
                got.contains(expected),
                "{text:?}: reason {got:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn error_message_names_the_range() {
        let e = Range::parse(">=foo").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid semver range ">=foo": ">=foo" is not a valid constraint: not a version"#
        );
    }

    #[test]
    fn range_displays_as_written() {
        assert_eq!(range(" >=1.0,  <2 ").to_string(), " >=1.0,  <2 ");
    }

    #[test]
    fn highest_matching_picks_the_highest_matching_tag() {
        let tags = [
            "v1.0.0",
            "v1.5.0",
            "latest",
            "v1.2",
            "v2.0.0",
            "v1.4.9",
            "1.5.0-rc.1",
        ];
        assert_eq!(highest_matching(&range(">=1.0.0 <2.0.0"), tags), ["v1.5.0"]);
        assert_eq!(highest_matching(&range("*"), tags), ["v2.0.0"]);
        assert_eq!(highest_matching(&range("~1.4"), tags), ["v1.4.9"]);
        assert!(highest_matching(&range(">=3"), tags).is_empty());
        assert!(highest_matching(&range("*"), []).is_empty());
    }

    #[test]
    fn highest_matching_skips_prereleases_unless_the_range_names_one() {
        let tags = ["v1.0.0", "v1.1.0-rc.1", "v1.1.0-rc.2"];
        assert_eq!(highest_matching(&range(">=1.0.0"), tags), ["v1.0.0"]);
        assert_eq!(highest_matching(&range(">=1.0.0-0"), tags), ["v1.1.0-rc.2"]);
        // The release outranks its own prereleases.
        let released = ["v1.1.0-rc.2", "v1.1.0", "v1.1.0-rc.1"];
        assert_eq!(highest_matching(&range(">=1.0.0-0"), released), ["v1.1.0"]);
    }

    #[test]
    fn highest_matching_keeps_every_tie_in_input_order() {
        let build_tie = ["1.0.0+a", "0.9.0", "v1.0.0+b", "1.0.0-rc.1"];
        assert_eq!(
            highest_matching(&range("^1"), build_tie),
            ["1.0.0+a", "v1.0.0+b"]
        );
        let prefix_tie = ["1.0.0", "v0.1.0", "v1.0.0"];
        assert_eq!(
            highest_matching(&range("*"), prefix_tie),
            ["1.0.0", "v1.0.0"]
        );
        let reversed = ["v1.0.0", "1.0.0"];
        assert_eq!(highest_matching(&range("*"), reversed), ["v1.0.0", "1.0.0"]);
        // A tie below the winner is dropped.
        let lower_tie = ["1.0.0+a", "1.0.0+b", "1.0.1"];
        assert_eq!(highest_matching(&range("1.0"), lower_tie), ["1.0.1"]);
    }

    #[test]
    fn highest_matching_accepts_borrowed_strings() {
        let owned: Vec<String> = vec!["v0.1.0".into(), "v0.2.0".into()];
        let best = highest_matching(&range("^0.1"), owned.iter().map(String::as_str));
        assert_eq!(best, ["v0.1.0"]);
    }
}
