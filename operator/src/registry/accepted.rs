//! Keeping the last valid version of a resource in force.

use std::collections::BTreeMap;

use super::{ObjectKey, Observed, Snapshot};

/// Fills `accepted` of every invalid resource in `next` from `prev`, so a bad edit leaves
/// the previous rules in force rather than removing them. A resource that was deleted
/// and re-created invalid has nothing to carry (nothing of it was ever in force).
pub fn carry_accepted(prev: &Snapshot, next: &mut Snapshot) {
    carry(&prev.traffic_routes, &mut next.traffic_routes);
    carry(&prev.encryption_policies, &mut next.encryption_policies);
    carry(&prev.self_healings, &mut next.self_healings);
    carry(&prev.access_policies, &mut next.access_policies);
}

fn carry<T>(prev: &BTreeMap<ObjectKey, Observed<T>>, next: &mut BTreeMap<ObjectKey, Observed<T>>) {
    for (key, obs) in next.iter_mut() {
        if obs.current.is_err()
            && obs.accepted.is_none()
            && let Some(before) = prev.get(key)
            && before.created == obs.created
        {
            obs.accepted = before.accepted.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use braid_crds::{FieldPath, ValidationError, ValidationErrors};

    use super::*;

    fn invalid() -> Result<Arc<u32>, ValidationErrors> {
        Err(ValidationErrors(vec![ValidationError {
            path: FieldPath::root("spec.rules"),
            message: "bad".into(),
        }]))
    }

    fn snap(obs: Observed<u32>) -> BTreeMap<ObjectKey, Observed<u32>> {
        [(obs.key.clone(), obs)].into()
    }

    #[test]
    fn an_invalid_edit_keeps_the_last_valid_version() {
        let key = ObjectKey::new("shop", "payments");
        let created = Some("2026-11-22T00:00:00Z".to_string());
        let v1 = snap(Observed::new(
            key.clone(),
            Some(1),
            created.clone(),
            Ok(Arc::new(1)),
        ));
        let mut v2 = snap(Observed::new(
            key.clone(),
            Some(2),
            created.clone(),
            invalid(),
        ));
        carry(&v1, &mut v2);
        assert_eq!(v2[&key].accepted.as_deref(), Some(&1));
        // And again on the next snapshot, still invalid.
        let mut v3 = snap(Observed::new(key.clone(), Some(3), created, invalid()));
        carry(&v2, &mut v3);
        assert_eq!(v3[&key].accepted.as_deref(), Some(&1));
    }

    #[test]
    fn a_recreated_resource_does_not_inherit() {
        let key = ObjectKey::new("shop", "payments");
        let v1 = snap(Observed::new(
            key.clone(),
            Some(1),
            Some("a".into()),
            Ok(Arc::new(1)),
        ));
        let mut v2 = snap(Observed::new(
            key.clone(),
            Some(1),
            Some("b".into()),
            invalid(),
        ));
        carry(&v1, &mut v2);
        assert!(v2[&key].accepted.is_none());
    }
}
