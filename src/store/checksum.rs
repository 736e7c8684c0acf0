//! Sets of refs as an operator compares them across nodes (`git stargate verify`, the
//! planned promotion's last check, `git stargate status`).

use std::collections::BTreeMap;

use gix::ObjectId;

/// The refs a mirror copies: every ref but Stargate's own (`refs/stargate/*`), by name.
pub fn mirrored(refs: impl IntoIterator<Item = (String, ObjectId)>) -> BTreeMap<String, ObjectId> {
    refs.into_iter().filter(|(name, _)| !name.starts_with("refs/stargate/")).collect()
}

/// One checksum of a set of refs (`mirrored`): the XOR of SHA-1 over `<oid> <refname>` of
/// each, as Gitaly does. Equal sets give equal sums, whatever the order; one differing ref
/// changes it.
pub fn checksum(refs: &BTreeMap<String, ObjectId>) -> String {
    let mut sum = [0u8; 20];
    for (name, oid) in refs {
        let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
        hasher.update(format!("{oid} {name}").as_bytes());
        if let Ok(digest) = hasher.try_finalize() {
            for (s, d) in sum.iter_mut().zip(digest.as_bytes()) {
                *s ^= d;
            }
        }
    }
    sum.iter().map(|b| format!("{b:02x}")).collect()
}

/// The names of the refs (`mirrored`) whose values differ between two listings.
pub fn differing(
    a: impl IntoIterator<Item = (String, ObjectId)>,
    b: impl IntoIterator<Item = (String, ObjectId)>,
) -> Vec<String> {
    let (a, b) = (mirrored(a), mirrored(b));
    if checksum(&a) == checksum(&b) {
        return Vec::new();
    }
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names.into_iter().filter(|n| a.get(*n) != b.get(*n)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_sets_sum_alike_whatever_the_order_and_one_ref_changes_it() {
        let (x, y) = (ObjectId::from_bytes_or_panic(&[1; 20]), ObjectId::from_bytes_or_panic(&[2; 20]));
        let a = vec![("refs/heads/a".to_owned(), x), ("refs/heads/b".to_owned(), y)];
        let mut b = a.clone();
        b.reverse();
        b.push(("refs/stargate/journal".to_owned(), x));
        assert_eq!(checksum(&mirrored(a.clone())), checksum(&mirrored(b.clone())));
        assert!(differing(a.clone(), b).is_empty(), "Stargate's own refs are not compared");
        let c = vec![("refs/heads/a".to_owned(), y), ("refs/heads/b".to_owned(), y)];
        assert_eq!(differing(a, c), vec!["refs/heads/a".to_owned()]);
    }
}
