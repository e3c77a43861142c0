//! Which lead fields identify a consumer, and so may never be sent in a ping (PROTOCOL.md §2:
//! a ping's `lead` holds "no name, email, phone, street or other personal field").
//!
//! Sellers and operators spell field names many ways (`email`, `Email`, `email_address`,
//! `alt_email`, `home_phone`, `address1`, ...), so a fixed list of exact names lets most of them
//! through. A name is first normalised: ASCII letters only, lowercased, so that case, `_`, `-`,
//! `.`, spaces and digits do not matter (`Home-Phone 2` reads `homephone`). It is personal when
//! the normalised name is one of `EXACT` or contains one of `CONTAINS`, or begins or ends
//! with `ssn`.
//!
//! The markers err on the side of refusing: a ping can always carry a coarser field instead
//! (`age` rather than a birth date, `zip` and `city` rather than an address), and a refused name
//! is reported by `gavel check`, never silently dropped from a valid config.

/// Normalised names that are personal on their own but too short, or too common inside other
/// words, to refuse wherever they appear (`cell` is in `excellent`, `ip` in `zip`, `name` in
/// `company_name`).
const EXACT: &[&str] = &[
    // Names.
    "name",
    "fname",
    "lname",
    "mname",
    "first",
    "last",
    "initials",
    // Contact.
    "mail",
    "tel",
    "telno",
    "cell",
    "cellno",
    // Address lines.
    "apt",
    "aptno",
    "suite",
    "unitno",
    "pobox",
    // Network and device.
    "ip",
    "ipv",
    "ua",
    "sms",
    "cert",
    // Identity numbers: social insurance (CA), taxpayer id, vehicle id, card codes, PINs.
    "sin",
    "tin",
    "vin",
    "cvv",
    "cvc",
    "pin",
    "iban",
    // Driver's license (`dl`, `dln`, `dl_no`), a license or licence number on its own, and
    // the social security number by its first word.
    "dl",
    "dln",
    "dlno",
    "dlid",
    "license",
    "licence",
    "social",
    "bday",
    // A card or account by its kind alone (`credit_card_debt` and `has_bank_account_type` are
    // fine: the numbers are `cardnumber` and `accountnumber` below).
    "creditcard",
    "debitcard",
    "bankaccount",
    // Precise location.
    "lat",
    "lng",
    "lon",
    "latlng",
    "latlon",
    "gps",
    "coords",
    "coordinates",
];

/// Normalised fragments that make any name containing them personal.
const CONTAINS: &[&str] = &[
    // Names (but not `name` alone: `company_name`, `carrier_name`).
    "firstname",
    "lastname",
    "middlename",
    "middleinitial",
    "fullname",
    "maidenname",
    "surname",
    "forename",
    "givenname",
    "familyname",
    "nickname",
    "username",
    "contactname",
    "customername",
    "consumername",
    "applicantname",
    "borrowername",
    "ownername",
    "spousename",
    "personname",
    "drivername",
    "insuredname",
    "holdername",
    "coapplicantname",
    "cosignername",
    "tenantname",
    "homeownername",
    "patientname",
    "claimantname",
    "beneficiaryname",
    "guardianname",
    "parentname",
    "childname",
    "dependentname",
    "membername",
    "callername",
    "recipientname",
    "primaryname",
    "secondaryname",
    // Email, phone, fax.
    "email",
    "phone",
    "mobile",
    "cellnum",
    "cellular",
    "fax",
    "contactnumber",
    "msisdn",
    "whatsapp",
    "wireless",
    "landline",
    "skype",
    // Postal address (also `ip_addr`, `email_address`).
    "addr",
    "street",
    "housenumber",
    "aptnumber",
    "unitnumber",
    "postbox",
    // Birth date, birthday, date of birth, year of birth.
    "birth",
    "dob",
    // Government and financial identifiers.
    "socialsecurity",
    "taxid",
    "taxpayer",
    "nationalid",
    "passport",
    "driverslicense",
    "driverlicense",
    "driverslicence",
    "driverlicence",
    "licensenumber",
    "licenseno",
    "licencenumber",
    "licenceno",
    "licenseplate",
    "licenceplate",
    "dlnum",
    "licensenum",
    "licencenum",
    "accountno",
    "platenumber",
    "vinnumber",
    "accountnumber",
    "routingnumber",
    "cardnumber",
    "policynumber",
    "memberid",
    "medicareid",
    "medicarenumber",
    "medicaidid",
    "medicaidnumber",
    "password",
    "passcode",
    "signature",
    // Network, device and browser.
    "ipaddr",
    "clientip",
    "remoteip",
    "userip",
    "visitorip",
    "consumerip",
    "sourceip",
    "useragent",
    "forwardedfor",
    "deviceid",
    "cookie",
    "fingerprint",
    // Consent certificates and lead tokens: each one leads back to the consumer.
    "trustedform",
    "jornaya",
    "leadid",
    "certurl",
    "tfcert",
    "certid",
    "certificate",
    "consent",
    // Precise location.
    "latitude",
    "longitude",
    "geolocation",
];

/// Whether a lead field of this name identifies the consumer (see the module documentation).
///
/// Meant for config time, not for every ping (it compares the name with every marker): a
/// validated config never holds a personal ping field.
pub fn is_personal_field(name: &str) -> bool {
    let n: Vec<u8> = name
        .chars()
        .map(ascii_look_alike)
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase() as u8)
        .collect();
    n.starts_with(b"ssn")
        || n.ends_with(b"ssn")
        || EXACT.iter().any(|m| m.as_bytes() == n)
        || CONTAINS.iter().any(|m| contains(&n, m.as_bytes()))
}

/// The ASCII letter a character passes for in a field name: accented Latin letters, the
/// dotless and dotted i, the long s, the Kelvin sign and fullwidth letters read as the letter
/// they show (`emaıl`, `émail` and `ｅｍａｉｌ` are `email`). Anything else is itself.
fn ascii_look_alike(c: char) -> char {
    match c {
        'à'..='å' | 'À'..='Å' | 'ā' | 'ă' | 'ą' | 'ª' => 'a',
        'ç' | 'Ç' | 'ć' | 'č' => 'c',
        'è'..='ë' | 'È'..='Ë' | 'ē' | 'ė' | 'ę' | 'ě' => 'e',
        'ì'..='ï' | 'Ì'..='Ï' | 'ı' | 'İ' | 'ī' | 'į' => 'i',
        'ñ' | 'Ñ' | 'ń' | 'ň' => 'n',
        'ò'..='ö' | 'Ò'..='Ö' | 'ø' | 'Ø' | 'ō' | 'º' => 'o',
        'ù'..='ü' | 'Ù'..='Ü' | 'ū' | 'ů' => 'u',
        'ý' | 'ÿ' | 'Ý' => 'y',
        'ś' | 'š' | 'ſ' => 's',
        'ž' | 'ź' | 'ż' => 'z',
        'ł' | 'Ł' => 'l',
        '\u{212A}' => 'k',
        '\u{FF21}'..='\u{FF3A}' | '\u{FF41}'..='\u{FF5A}' => {
            char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
        }
        _ => c,
    }
}

/// Whether a string value, whatever field holds it, identifies the consumer: an email address
/// (anywhere in the text), a phone number (the whole value: 10 to 15 digits written only with
/// digits, spaces and `+ - ( ) .`; or within free text: `713-555-0147`, `(713) 555-0147 x12`,
/// `+44 7946 095812`), a social security number (`123-45-6789`), an IP address (with or
/// without a port), a LeadiD-style token (a UUID), or a consent certificate or lead token URL
/// (any text naming their makers, `trustedform`, `jornaya`, `leadid`, in any case).
/// Fullwidth forms (`７１３…`, `＠`) are read as the ASCII they show. A ping leaves such a value
/// out, so a seller that puts the phone under an innocent name (`"score": "(713) 555-0147"`)
/// does not hand it to every pinged buyer. Cheap enough for every lead: a few passes over the
/// text, and no allocation unless it holds fullwidth forms.
pub fn is_personal_value(s: &str) -> bool {
    if !s.is_ascii() && s.chars().any(|c| is_fullwidth_ascii(c) || is_dash(c)) {
        let plain: String = s
            .chars()
            .map(|c| {
                if is_fullwidth_ascii(c) {
                    char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
                } else if is_dash(c) {
                    '-'
                } else {
                    c
                }
            })
            .collect();
        return is_personal_ascii(&plain);
    }
    is_personal_ascii(s)
}

/// A dash other than ASCII's `-` that a number may be written with: the hyphens and dashes
/// of U+2010 to U+2015 and the minus sign U+2212.
fn is_dash(c: char) -> bool {
    ('\u{2010}'..='\u{2015}').contains(&c) || c == '\u{2212}'
}

/// A fullwidth form of a printable ASCII character (U+FF01 to U+FF5E).
fn is_fullwidth_ascii(c: char) -> bool {
    ('\u{FF01}'..='\u{FF5E}').contains(&c)
}

fn is_personal_ascii(s: &str) -> bool {
    let t = s.trim();
    if let Some(at) = t.find('@') {
        if at > 0 && t[at + 1..].contains('.') {
            return true;
        }
    }
    // An email percent-encoded in a URL or form value: `ana%40example.com`, a local part
    // right before the `%40` and a dotted domain right after it.
    for (at, _) in t.match_indices('%') {
        let b = t.as_bytes();
        let local = at > 0 && (b[at - 1].is_ascii_alphanumeric() || b"._+-".contains(&b[at - 1]));
        if local && b[at..].len() > 3 && b[at..at + 3].eq_ignore_ascii_case(b"%40") {
            let domain: &[u8] = &b[at + 3..];
            let n = domain
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-'))
                .count();
            let domain = &domain[..n];
            if domain
                .iter()
                .rposition(|&c| c == b'.')
                .is_some_and(|d| d > 0 && d + 1 < n)
            {
                return true;
            }
        }
    }
    let digits = t.bytes().filter(u8::is_ascii_digit).count();
    if (10..=15).contains(&digits)
        && t.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b' ' | b'+' | b'-' | b'(' | b')' | b'.'))
    {
        return true;
    }
    if digits >= 9 && has_number_shape(t.as_bytes()) {
        return true;
    }
    // An address starts with a digit, a hex digit or `:` (IPv6), or `[` (IPv6 with a port).
    let may_be_address = t
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_hexdigit() || b == b':' || b == b'[');
    if may_be_address
        && (t.parse::<std::net::IpAddr>().is_ok()
            || (t.contains(':') && t.parse::<std::net::SocketAddr>().is_ok()))
    {
        return true;
    }
    if is_uuid(t.as_bytes()) {
        return true;
    }
    ["trustedform", "jornaya", "leadid"].iter().any(|m| {
        t.as_bytes()
            .windows(m.len())
            .any(|w| w.eq_ignore_ascii_case(m.as_bytes()))
    })
}

/// Whether free text holds a phone number or a social security number: a run of digit groups,
/// each joined to the next by one or two of `space - . ( ) /`, not touching other digits, whose
/// group sizes are those of a phone (`3 3 4`, `1 3 3 4` starting with 1, ten digits, eleven
/// starting with 1, `3 7`), of an international number after a `+` (10 to 15 digits in all), or
/// of an SSN (`3 2 4` joined by `-`, or by spaces). Dates (`2026-12-03 17:48`) and zip codes (`77002-1234`)
/// have other shapes.
fn has_number_shape(b: &[u8]) -> bool {
    /// Most digit groups one run is read as.
    const MAX_GROUPS: usize = 8;
    let sep = |c: u8| matches!(c, b' ' | b'-' | b'.' | b'(' | b')' | b'/');
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && b[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        // A `+` just before the run (allowing one `(` or space between) makes it international.
        let plus = b[..i]
            .iter()
            .rev()
            .take(2)
            .position(|&c| c == b'+')
            .is_some_and(|k| b[i - k..i].iter().all(|&c| c == b'+' || sep(c)));
        let first = b[i];
        let mut groups = [0usize; MAX_GROUPS];
        let mut seps = [&b""[..]; MAX_GROUPS];
        let mut n = 0;
        let mut j = i;
        loop {
            let start = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            groups[n] = j - start;
            n += 1;
            let gap = b[j..].iter().take_while(|&&c| sep(c)).count();
            let next_is_digit = b.get(j + gap).is_some_and(u8::is_ascii_digit);
            if n == MAX_GROUPS || !(1..=2).contains(&gap) || !next_is_digit {
                break;
            }
            seps[n - 1] = &b[j..j + gap];
            j += gap;
        }
        let g = &groups[..n];
        let total: usize = g.iter().sum();
        let phone = match g {
            [10] | [3, 3, 4] | [3, 7] => true,
            [11] | [1, 3, 3, 4] => first == b'1',
            _ => false,
        };
        let ssn = g == [3, 2, 4] && seps[0] == seps[1] && (seps[0] == b"-" || seps[0] == b" ");
        if phone || ssn || (plus && (10..=15).contains(&total)) {
            return true;
        }
        i = j.max(i + 1);
    }
    false
}

/// A UUID in its usual text form (8-4-4-4-12 hex digits), the shape of a LeadiD token.
fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Whether a JSON number's text could be a phone number: a whole number of 10 to 15 digits
/// (`7135550147`, `17135550147.0`, `7.135550147e9`). A ping leaves it out as it would the same digits in a
/// string.
pub fn is_personal_number(text: &str) -> bool {
    let t = text.trim().trim_start_matches('-');
    if t.contains(['e', 'E']) {
        // `7.135550147e9` is `7135550147`.
        return t
            .parse::<f64>()
            .is_ok_and(|f| f.fract() == 0.0 && (1e9..1e15).contains(&f));
    }
    // Most numbers in a lead (an age, a year, a price) are far too short to be one.
    if t.len() < 10 {
        return false;
    }
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    (10..=15).contains(&int.len())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b == b'0')
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.len() >= needle.len() && haystack.windows(needle.len()).any(|w| w == needle)
}
