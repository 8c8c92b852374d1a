//! The line formats cgroup v2 files share (Documentation/admin-guide/cgroup-v2.rst,
//! "Interface Files"): every per-family parser is built from these.

/// A parse error: what was wrong, for the message that names the file.
pub type FormatError = String;

/// `"N"`, or `"max"` for no limit (`None`).
pub fn limit(text: &str) -> Result<Option<u64>, FormatError> {
    match text.trim() {
        "max" => Ok(None),
        v => number(v).map(Some),
    }
}

/// A decimal `u64`.
pub fn number(v: &str) -> Result<u64, FormatError> {
    v.parse().map_err(|_| format!("not a number: {v:?}"))
}

/// Flat keyed: one `key value` pair per line. Lines without a value are skipped.
pub fn flat(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k, v.trim()))
}

/// Nested keyed: `KEY sub=value sub=value ...` per line (io.stat, io.max, *.pressure).
pub fn nested(text: &str) -> impl Iterator<Item = (&str, impl Iterator<Item = (&str, &str)>)> {
    text.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let key = fields.next()?;
        Some((key, fields.filter_map(|f| f.split_once('='))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_numbers_and_keys() {
        assert_eq!(limit("max\n"), Ok(None));
        assert_eq!(limit("67108864\n"), Ok(Some(67_108_864)));
        assert!(limit("-1").is_err());
        assert!(limit("").is_err());
        let pairs: Vec<_> = flat("a 1\nbroken\nb  2\n").collect();
        assert_eq!(pairs, [("a", "1"), ("b", "2")]);
        let mut lines = nested("8:0 rbytes=1 junk wios=2\n");
        let (key, subs) = lines.next().unwrap();
        assert_eq!(key, "8:0");
        assert_eq!(subs.collect::<Vec<_>>(), [("rbytes", "1"), ("wios", "2")]);
    }
}
