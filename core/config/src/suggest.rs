//! "Did you mean" suggestions: the nearest valid word by edit distance.

/// The candidate nearest to `word`, when it is close enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) && *d < c.len().max(word.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `` `a`, `b`, `c` `` for messages.
pub fn quoted_list<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words.into_iter().map(|w| format!("`{w}`")).collect::<Vec<_>>().join(", ")
}

/// A help text: "did you mean `x`? valid ones are ..." or just the list.
pub fn help_for(word: &str, what: &str, candidates: &[&str]) -> String {
    let list = quoted_list(candidates.iter().copied());
    match nearest(word, candidates.iter().copied()) {
        Some(n) => format!("did you mean `{n}`? valid {what} are {list}"),
        None if candidates.is_empty() => format!("no {what} are allowed here"),
        None => format!("valid {what} are {list}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(nearest("nested_gest", ["kvm_host", "nested_guest"]), Some("nested_guest"));
        assert_eq!(nearest("vcpu", ["vcpus", "memory"]), Some("vcpus"));
        assert_eq!(nearest("zzzzzz", ["vcpus", "memory"]), None);
    }
}
