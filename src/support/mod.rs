//! Small utilities with one home each, shared across the crate: retry
//! pacing, mutex locking, the duration and size grammars, time-zone names,
//! base64, diagnostics at a file's line and column (topology, sink and
//! Kafka settings files), dead-letter header names and "did you mean"
//! suggestions. Leaf modules: they depend on nothing else in the crate.

pub(crate) mod backoff;
pub mod base64;
pub(crate) mod dead_letter;
pub(crate) mod diag;
pub(crate) mod duration;
pub(crate) mod lock;
pub(crate) mod size;
pub(crate) mod tz;

/// The candidate closest to `word`, if it is close enough to be a likely
/// typo.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // Close by edit distance (a typo: one or two edits, a swapped pair) or
    // by Jaro-Winkler (shared prefix); the closest wins.
    let max_edits = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (strsim::damerau_levenshtein(word, c), strsim::jaro_winkler(word, c), c))
        .filter(|(edits, jw, _)| *edits <= max_edits || *jw > 0.85)
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, c)| c)
}
