//! Borrowing deserializers for strings inside an `Option`, a `Vec` or a map. serde's `borrow` borrows a
//! field only when it is exactly `Cow<'a, str>`; an `Option<Cow<str>>`, a `Vec<Cow<str>>` or a map of them
//! got an allocated `String` for every value (a dozen per event: timestamps, groups, source IPs, the user
//! agent, annotations). These borrow from the input wherever a string holds no escape, as the plain fields do.
//! Written by hand because serde offers this only for the exact field types.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// A string that borrows from the input when it can.
struct Str<'a>(Cow<'a, str>);

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Str<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Str<'de>, E> {
        Ok(Str(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Str<'de>, E> {
        Ok(Str(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Str<'de>, E> {
        Ok(Str(Cow::Owned(s)))
    }
}

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Str<'de>, D::Error> {
        d.deserialize_str(StrVisitor)
    }
}

/// `Option<Cow<str>>`, borrowed where possible.
pub(crate) fn opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    Ok(Option::<Str<'de>>::deserialize(d)?.map(|s| s.0))
}

/// `Vec<Cow<str>>`, borrowed where possible.
pub(crate) fn vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cow<'de, str>>, D::Error> {
    Ok(Vec::<Str<'de>>::deserialize(d)?
        .into_iter()
        .map(|s| s.0)
        .collect())
}

type Map<'a> = BTreeMap<Cow<'a, str>, Cow<'a, str>>;

/// `Option<BTreeMap<Cow<str>, Cow<str>>>`, borrowed where possible; a key given twice keeps its last value,
/// as serde's own map does.
pub(crate) fn opt_map<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Map<'de>>, D::Error> {
    struct MapVisitor;
    impl<'de> Visitor<'de> for MapVisitor {
        type Value = Map<'de>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Map<'de>, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<Str<'de>, Str<'de>>()? {
                out.insert(k.0, v.0);
            }
            Ok(out)
        }
    }
    struct M<'a>(Map<'a>);
    impl<'de> Deserialize<'de> for M<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<M<'de>, D::Error> {
            d.deserialize_map(MapVisitor).map(M)
        }
    }
    Ok(Option::<M<'de>>::deserialize(d)?.map(|m| m.0))
}
