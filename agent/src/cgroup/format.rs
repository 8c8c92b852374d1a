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

/// `text` split at the first `sep`, which must be ASCII. For the short lines and
/// fields of kernel files a plain byte loop beats `str::split_once`'s searcher.
pub fn split_at_byte(text: &str, sep: u8) -> Option<(&str, &str)> {
    let i = text.bytes().position(|b| b == sep)?;
    Some((&text[..i], &text[i + 1..]))
}

/// The pieces of `text` between `sep` bytes (ASCII), without a trailing empty one.
/// A plain byte loop: on the short lines and fields of kernel files, `str::split`'s
/// memchr-based searcher costs more in set-up than it saves.
pub fn split_bytes(text: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (piece, tail) = split_at_byte(rest, sep).unwrap_or((rest, ""));
        rest = tail;
        Some(piece)
    })
}

/// The lines of a kernel file, without their `\n` (the kernel writes no `\r`).
pub fn lines(text: &str) -> impl Iterator<Item = &str> {
    split_bytes(text, b'\n')
}

/// The fields of a line (or a one-line file) separated by runs of spaces.
pub fn fields(line: &str) -> impl Iterator<Item = &str> {
    split_bytes(line.trim_ascii(), b' ').filter(|f| !f.is_empty())
}

/// Flat keyed: one `key value` pair per line. Lines without a value are skipped.
pub fn flat(text: &str) -> impl Iterator<Item = (&str, &str)> {
    lines(text)
        .filter_map(|l| split_at_byte(l, b' '))
        .map(|(k, v)| (k, v.trim_ascii()))
}

/// Nested keyed: `KEY sub=value sub=value ...` per line (io.stat, io.max, *.pressure).
pub fn nested(text: &str) -> impl Iterator<Item = (&str, impl Iterator<Item = (&str, &str)>)> {
    lines(text).filter_map(|line| {
        let mut fields = fields(line);
        let key = fields.next()?;
        Some((key, fields.filter_map(|f| split_at_byte(f, b'='))))
    })
}

/// A non-negative decimal with at most two fraction digits, as PSI's `avg10=22.18`,
/// parsed without the general float parser.
pub fn percent(v: &str) -> Result<f64, FormatError> {
    let bad = || format!("not a percentage: {v:?}");
    let (mut hundredths, mut int_digits, mut frac_digits) = (0u64, 0, None);
    for b in v.bytes() {
        match (b, &mut frac_digits) {
            (b'.', None) => frac_digits = Some(0),
            (b'0'..=b'9', Some(2)) => return Err(bad()),
            (b'0'..=b'9', digits) => {
                hundredths = hundredths
                    .checked_mul(10)
                    .and_then(|h| h.checked_add(u64::from(b - b'0')))
                    .ok_or_else(bad)?;
                match digits {
                    Some(n) => *n += 1,
                    None => int_digits += 1,
                }
            }
            _ => return Err(bad()),
        }
    }
    let scale = match frac_digits {
        _ if int_digits == 0 => return Err(bad()),
        None => 100,
        Some(0) => return Err(bad()),
        Some(1) => 10,
        Some(_) => 1,
    };
    Ok(hundredths.checked_mul(scale).ok_or_else(bad)? as f64 / 100.0)
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
        let mut keyed = nested("8:0 rbytes=1 junk wios=2\n");
        let (key, subs) = keyed.next().unwrap();
        assert_eq!(key, "8:0");
        assert_eq!(subs.collect::<Vec<_>>(), [("rbytes", "1"), ("wios", "2")]);
        assert_eq!(fields(" a  b ").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(lines("a\n\nb").collect::<Vec<_>>(), ["a", "", "b"]);
        assert_eq!(lines("a\n").collect::<Vec<_>>(), ["a"]);
        assert_eq!(split_at_byte("k=v=w", b'='), Some(("k", "v=w")));
        assert_eq!(split_at_byte("é=1", b'='), Some(("é", "1")));
        assert_eq!(percent("22.18"), Ok(22.18));
        assert_eq!(percent("0.5"), Ok(0.5));
        assert_eq!(percent("100"), Ok(100.0));
        for bad in [
            "",
            ".5",
            "1.",
            "1.234",
            "-1.0",
            "x",
            "1.2x",
            "1..2",
            "99999999999999999999",
        ] {
            assert!(percent(bad).is_err(), "{bad}");
        }
    }
}
