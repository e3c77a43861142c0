//! Money is integer cents. Amounts arrive as JSON numbers in dollars (`42.5`) and are
//! converted from their decimal text straight into cents, never through a float.

/// Cents, signed so that differences (profit) are representable.
pub type Cents = i64;

/// Largest amount accepted anywhere: $10 million. Guards every multiplication below.
pub const MAX_CENTS: Cents = 1_000_000_000;

/// Parse a JSON number's text (`42`, `42.5`, `42.567`, `4.25e1`) into cents, rounding
/// down to the cent. Returns `None` for text that is not a number or is out of range.
/// Negative amounts are returned as negative cents; callers decide whether they are valid.
pub fn parse_cents(text: &str) -> Option<Cents> {
    match parse_plain_cents(text.as_bytes()) {
        Some(cents) => Some(cents),
        None => parse_any_cents(text),
    }
}

/// The usual bid (`42`, `42.5`, `1.2345`: up to seven integer digits, no sign, exponent or
/// space) in one pass. `None` sends anything else to the general parser, which also decides
/// whether it is a number at all.
fn parse_plain_cents(b: &[u8]) -> Option<Cents> {
    /// Seven digits of dollars stay below `MAX_CENTS`.
    const MAX_INT_DIGITS: usize = 7;
    let mut i = 0;
    let mut dollars: Cents = 0;
    while let Some(&d) = b.get(i).filter(|d| d.is_ascii_digit()) {
        if i == MAX_INT_DIGITS {
            return None;
        }
        dollars = dollars * 10 + Cents::from(d - b'0');
        i += 1;
    }
    if i == 0 {
        return None;
    }
    let Some(rest) = b.get(i..).filter(|r| !r.is_empty()) else {
        return Some(dollars * 100);
    };
    let frac = rest.strip_prefix(b".")?;
    if frac.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let digit = |k: usize| frac.get(k).map_or(0, |d| Cents::from(d - b'0'));
    Some(dollars * 100 + digit(0) * 10 + digit(1))
}

/// Any JSON number's text, exponents and surrounding space included.
fn parse_any_cents(text: &str) -> Option<Cents> {
    let s = text.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if s.is_empty() {
        return None;
    }
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => {
            let e: i32 = s[i + 1..].parse().ok()?;
            (&s[..i], e)
        }
        None => (s, 0),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if mantissa.contains('.')
        && (frac_part.is_empty() || !frac_part.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    if exp > 40 {
        return None;
    }
    // Far below a cent only whether the amount is zero matters (`1e-1000` is 0 cents).
    let exp = exp.max(-60);
    // All digits as one decimal string with the point moved by `exp`; cents = the first
    // (int + 2 + exp) digits, padded with zeros. No allocation: bids are parsed per ping.
    let point = int_part.len() as i64 + exp as i64 + 2;
    let mut digits = int_part.bytes().chain(frac_part.bytes());
    let mut cents: i64 = 0;
    for _ in 0..point.max(0) {
        let d = digits.next().map_or(0, |b| (b - b'0') as i64);
        cents = cents.checked_mul(10)?.checked_add(d)?;
        if cents > MAX_CENTS {
            return None;
        }
    }
    // Rounding down a negative amount with more than the cents takes it a cent further from
    // zero: `-0.001` is -1 cent (a negative bid), not 0 (no bid).
    if neg && digits.any(|b| b != b'0') {
        cents += 1;
    }
    Some(if neg { -cents } else { cents })
}

/// Dollars from a config float (TOML has no decimal type) to cents. `None` for an amount
/// with a fraction of a cent (`18.005`, `6.000001`): a price or budget is whole cents, and
/// rounding it either way would charge or allow what the operator did not write. Judged on the
/// float's shortest decimal form, which is the number as written for any amount written with
/// at most 17 significant digits: `18.01` (1800.9999999999998 cents as a float) reads back as
/// `18.01`, and `6.000001` as itself, however close to whole cents its float falls.
pub fn dollars_f64_to_cents(dollars: f64) -> Option<Cents> {
    if !dollars.is_finite() {
        return None;
    }
    // `Display` for floats writes the shortest decimal that reads back as the same float,
    // never with an exponent.
    let written = dollars.to_string();
    let decimals = written.split_once('.').map_or(0, |(_, frac)| frac.len());
    let c = (dollars * 100.0).round();
    if decimals > 2 || c.abs() > MAX_CENTS as f64 {
        return None;
    }
    Some(c as Cents)
}

/// Write cents as a JSON number in dollars: `12000` -> `120.0`, `4250` -> `42.5`, `5` -> `0.05`.
pub fn write_dollars(out: &mut Vec<u8>, cents: Cents) {
    let mut buf = itoa_buf(cents.unsigned_abs() / 100);
    if cents < 0 {
        out.push(b'-');
    }
    out.append(&mut buf);
    out.push(b'.');
    let frac = cents.unsigned_abs() % 100;
    if frac == 0 {
        out.push(b'0');
    } else if frac % 10 == 0 {
        out.push(b'0' + (frac / 10) as u8);
    } else {
        out.push(b'0' + (frac / 10) as u8);
        out.push(b'0' + (frac % 10) as u8);
    }
}

/// Cents as a dollar string, for text and JSON output.
pub fn dollars_string(cents: Cents) -> String {
    let mut v = Vec::with_capacity(16);
    write_dollars(&mut v, cents);
    String::from_utf8(v).unwrap_or_default()
}

/// Cents as dollars for people to read: a sign, `$` and always two decimals (`$8604.60`,
/// `-$3.50`, `$0.00`), so that amounts line up. JSON keeps [`dollars_string`].
/// The average of `n` amounts summing to `total`, to the nearest cent (a half cent away from
/// zero); 0 for none.
pub fn average_cents(total: Cents, n: u64) -> Cents {
    let Ok(n) = i64::try_from(n) else { return 0 };
    if n == 0 {
        return 0;
    }
    // In i128: twice a large total does not overflow.
    let (t, n) = (i128::from(total), i128::from(n));
    let avg = (2 * t + t.signum() * n) / (2 * n);
    Cents::try_from(avg).unwrap_or(0)
}

pub fn usd(cents: Cents) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}${}.{:02}", abs / 100, abs % 100)
}

fn itoa_buf(mut n: u64) -> Vec<u8> {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    tmp[i..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_round_to_the_nearest_cent() {
        assert_eq!(
            average_cents(6_304_057, 600),
            10_507,
            "$105.0676 is $105.07"
        );
        assert_eq!(average_cents(19_335_247, 2000), 9_668, "$96.676 is $96.68");
        assert_eq!(average_cents(5, 2), 3, "a half cent up");
        assert_eq!(average_cents(4, 3), 1);
        assert_eq!(average_cents(-5, 2), -3, "a half cent away from zero");
        assert_eq!(average_cents(100, 0), 0);
        assert_eq!(average_cents(i64::MAX, 1), i64::MAX);
    }

    #[test]
    fn parses_dollars_into_cents() {
        assert_eq!(parse_cents("42.5"), Some(4250));
        assert_eq!(parse_cents("42"), Some(4200));
        assert_eq!(parse_cents("0.05"), Some(5));
        assert_eq!(parse_cents("42.567"), Some(4256));
        assert_eq!(parse_cents("4.25e1"), Some(4250));
        assert_eq!(parse_cents("1E2"), Some(10000));
        assert_eq!(parse_cents("5e-3"), Some(0));
        assert_eq!(parse_cents("-3.5"), Some(-350));
        assert_eq!(parse_cents("-3.505"), Some(-351), "down, away from zero");
        assert_eq!(
            parse_cents("-0.001"),
            Some(-1),
            "a negative bid, not a zero one"
        );
        assert_eq!(parse_cents("-0.000"), Some(0));
        assert_eq!(parse_cents("-0"), Some(0));
        assert_eq!(
            parse_cents("1e-1000"),
            Some(0),
            "less than a cent is no cent"
        );
        assert_eq!(parse_cents("-1e-1000"), Some(-1));
        assert_eq!(parse_cents("1e41"), None);
        assert_eq!(parse_cents("0"), Some(0));
        assert_eq!(parse_cents(""), None);
        assert_eq!(parse_cents("abc"), None);
        assert_eq!(parse_cents("1."), None);
        assert_eq!(parse_cents(".5"), None);
        assert_eq!(parse_cents("99999999999999"), None);
    }

    #[test]
    fn the_quick_path_reads_every_number_as_the_general_parser_does() {
        let mut rng = crate::test_rng::Rng(0xcafe_f00d);
        let alphabet = b"0123456789012345678901234567890123456789..-eE+ x";
        let mut quick = 0;
        for _ in 0..300_000 {
            let len = rng.below(14);
            let text: String = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())] as char)
                .collect();
            if let Some(cents) = parse_plain_cents(text.as_bytes()) {
                quick += 1;
                assert_eq!(Some(cents), parse_any_cents(&text), "{text:?}");
            }
            assert_eq!(parse_cents(&text), parse_any_cents(&text), "{text:?}");
        }
        // The generator reaches the quick path often enough for the comparison to mean something.
        assert!(quick > 10_000, "only {quick} quick parses");
    }

    #[test]
    fn writes_cents_as_dollars() {
        assert_eq!(dollars_string(12000), "120.0");
        assert_eq!(dollars_string(4250), "42.5");
        assert_eq!(dollars_string(5), "0.05");
        assert_eq!(dollars_string(9601), "96.01");
        assert_eq!(dollars_string(-350), "-3.5");
        assert_eq!(dollars_string(0), "0.0");
    }

    #[test]
    fn prints_dollars_with_two_decimals() {
        assert_eq!(usd(860460), "$8604.60");
        assert_eq!(usd(0), "$0.00");
        assert_eq!(usd(5), "$0.05");
        assert_eq!(usd(12000), "$120.00");
        assert_eq!(usd(-350), "-$3.50");
        assert_eq!(usd(i64::MIN), "-$92233720368547758.08");
    }

    #[test]
    fn config_floats_round_to_cents() {
        assert_eq!(dollars_f64_to_cents(15000.00), Some(1_500_000));
        assert_eq!(dollars_f64_to_cents(0.29), Some(29));
        assert_eq!(dollars_f64_to_cents(f64::NAN), None);
        assert_eq!(dollars_f64_to_cents(18.01), Some(1801));
        assert_eq!(dollars_f64_to_cents(0.07), Some(7));
        assert_eq!(dollars_f64_to_cents(99_999.99), Some(9_999_999));
        // A fraction of a cent is refused, not rounded either way.
        assert_eq!(dollars_f64_to_cents(18.005), None);
        assert_eq!(dollars_f64_to_cents(10.009), None);
        assert_eq!(dollars_f64_to_cents(10.001), None);
        // However close to whole cents the float falls.
        for near in [
            6.000001,
            7.000001,
            0.000001,
            4.9999999,
            4.999999999,
            0.009999999,
        ] {
            assert_eq!(dollars_f64_to_cents(near), None, "{near}");
        }
        assert_eq!(dollars_f64_to_cents(1e-300), None);
        assert_eq!(dollars_f64_to_cents(0.1 + 0.2), None);
        assert_eq!(dollars_f64_to_cents(-3.5), Some(-350));
        assert_eq!(dollars_f64_to_cents(1e7), Some(1_000_000_000));
        assert_eq!(dollars_f64_to_cents(1e7 + 0.01), None);
        // Every amount in whole cents reads as itself, as TOML parses it.
        for c in (0..=2_000_000).chain((0..=MAX_CENTS).step_by(99_991)) {
            let written = format!("{}.{:02}", c / 100, c % 100);
            let dollars: f64 = written.parse().unwrap();
            assert_eq!(dollars_f64_to_cents(dollars), Some(c), "{written}");
        }
    }
}
