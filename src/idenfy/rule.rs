//! One field rule of iDenfy's request schemas, and the check that applies it to a JSON value.

use chrono::NaiveDate;
use isocountry::CountryCode;
use serde_json::Value;

use super::FieldError;

/// Characters iDenfy refuses in `firstName` and `lastName` (idenfy-api.md §3.1).
pub(crate) const NAME_FORBIDDEN: &str = "~!@#$%^*()_+={}[]|:;\",<>/?";

/// What a field's value must be.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// A client id: a string of 1–100 ASCII characters, or an integer.
    ClientId,
    /// A string of `min..=max` characters.
    Text { min: usize, max: usize },
    /// A person's name: 1–100 characters, no digits, none of [`NAME_FORBIDDEN`].
    Name,
    /// A redirect URL: 5–2048 characters.
    Url,
    /// A webhook URL: `https://`, at most 2048 characters.
    HttpsUrl,
    /// An integer in `min..=max`.
    Int { min: u64, max: u64 },
    /// One of a fixed set of strings.
    OneOf(&'static [&'static str]),
    /// An ISO 3166-1 alpha-2 code, either case.
    Country,
    /// An alpha-2 code, or an array of them.
    Countries,
    /// A calendar date that exists, written `YYYY-MM-DD`.
    Date,
    /// `true` or `false`.
    Bool,
    /// An array of at most `items` strings of at most `len` characters each.
    Tags { items: usize, len: usize },
}

impl Rule {
    /// Checks a present, non-null value.
    pub fn check(self, field: &'static str, value: &Value) -> Result<(), FieldError> {
        let ok = match self {
            Rule::ClientId => return client_id(field, value),
            Rule::Text { min, max } => text(value, min, max),
            Rule::Name => return name(field, value),
            Rule::Url => text(value, 5, 2048),
            Rule::HttpsUrl => https_url(value),
            Rule::Int { min, max } => value.as_u64().is_some_and(|n| (min..=max).contains(&n)),
            Rule::OneOf(set) => value.as_str().is_some_and(|s| set.contains(&s)),
            Rule::Country => country(value),
            Rule::Countries => match value {
                Value::Array(items) => items.iter().all(country),
                other => country(other),
            },
            Rule::Date => value.as_str().is_some_and(date),
            Rule::Bool => value.is_boolean(),
            Rule::Tags { items, len } => value
                .as_array()
                .is_some_and(|a| a.len() <= items && a.iter().all(|t| text(t, 0, len))),
        };
        if ok {
            Ok(())
        } else {
            Err(FieldError::bad(field, &self.describe()))
        }
    }

    /// The rule in words, for the message (`"{field} must be {describe}"`).
    fn describe(self) -> String {
        match self {
            Rule::ClientId => "a string of 1 to 100 ASCII characters or an integer".to_owned(),
            Rule::Text { min, max } => format!("a string of {min} to {max} characters"),
            Rule::Name => "a string of 1 to 100 characters".to_owned(),
            Rule::Url => "a string of 5 to 2048 characters".to_owned(),
            Rule::HttpsUrl => "an https URL of at most 2048 characters".to_owned(),
            Rule::Int { min, max } => format!("an integer from {min} to {max}"),
            Rule::OneOf(set) => format!("one of {}", set.join(", ")),
            Rule::Country => "an ISO 3166-1 alpha-2 country code".to_owned(),
            Rule::Countries => "an ISO 3166-1 alpha-2 country code or an array of them".to_owned(),
            Rule::Date => "an existing date written YYYY-MM-DD".to_owned(),
            Rule::Bool => "true or false".to_owned(),
            Rule::Tags { items, len } => {
                format!("an array of at most {items} strings of at most {len} characters")
            }
        }
    }
}

fn text(value: &Value, min: usize, max: usize) -> bool {
    value
        .as_str()
        .is_some_and(|s| (min..=max).contains(&s.chars().count()))
}

fn client_id(field: &'static str, value: &Value) -> Result<(), FieldError> {
    match value {
        Value::String(s) if !s.is_ascii() => Err(FieldError::bad(field, "ASCII")),
        Value::String(s) if (1..=100).contains(&s.len()) => Ok(()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(()),
        _ => Err(FieldError::bad(field, &Rule::ClientId.describe())),
    }
}

fn name(field: &'static str, value: &Value) -> Result<(), FieldError> {
    if !text(value, 1, 100) {
        return Err(FieldError::bad(field, &Rule::Name.describe()));
    }
    // Only ASCII digits: whether iDenfy also refuses other numerals is unknown (lenient reading).
    let refused = |c: char| c.is_ascii_digit() || NAME_FORBIDDEN.contains(c);
    if value.as_str().is_some_and(|s| s.contains(refused)) {
        let rule = format!("free of digits and of the characters {NAME_FORBIDDEN}");
        return Err(FieldError::bad(field, &rule));
    }
    Ok(())
}

fn https_url(value: &Value) -> bool {
    value.as_str().is_some_and(|s| {
        s.len() <= 2048
            && s.get(..8)
                .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
    })
}

fn country(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == 2 && CountryCode::for_alpha2_caseless(s).is_ok())
}

fn date(s: &str) -> bool {
    // chrono alone would take `2020-1-5`; iDenfy's format is the zero-padded one.
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}
