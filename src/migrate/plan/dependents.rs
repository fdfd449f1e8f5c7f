//! Objects that depend on the table (triggers, views, rules, sequences), its access rules
//! (owner, grants, row-level security) and its replication and storage settings: carried over,
//! warned about, or blocking. Also the kinds looked for and not found, so the preflight can say so.

use super::preflight::Preflight;
use crate::ident::QualifiedName;
use crate::migrate::definition;
use crate::migrate::inventory::Inventory;
use crate::migrate::UserTrigger;

/// User triggers, re-targeted at `partitioned` (the new table); the ones that can be carried.
pub(super) fn triggers(
    inv: &Inventory,
    partitioned: &QualifiedName,
    p: &mut Preflight,
) -> Vec<UserTrigger> {
    let mut user_triggers = Vec::new();
    for tr in &inv.triggers {
        match definition::retarget_trigger(&tr.definition, &inv.printed_name, &partitioned.quoted()) {
            Some(create_on_new) => {
                p.carried.push(format!("trigger {}: {}", tr.name, tr.definition));
                user_triggers.push(UserTrigger {
                    name: tr.name.clone(),
                    enabled: tr.enabled.clone(),
                    create_on_new,
                });
            }
            None => p.blockers.push(format!(
                "cannot re-create trigger {} ({}) automatically; drop it before converting and re-create it afterwards",
                tr.name, tr.definition
            )),
        }
    }
    if !user_triggers.is_empty() {
        p.warnings.push(
            "user triggers are re-created on the new table; while the backup is kept they are disabled on it, so rows mirrored into it do not fire them twice"
                .into(),
        );
    }
    user_triggers
}

/// Views are re-pointed inside the swap; materialized views and rules cannot be.
pub(super) fn views_and_rules(inv: &Inventory, p: &mut Preflight) {
    let t = &inv.table;
    for v in &inv.views {
        if v.kind == "m" {
            p.blockers.push(format!(
                "materialized view {} reads {t}; it would keep reading the backup. Drop it before converting and re-create it afterwards",
                v.name
            ));
        } else {
            p.carried.push(format!(
                "view {} (re-pointed at the new table inside the swap)",
                v.name
            ));
        }
    }
    for r in &inv.rules {
        p.blockers.push(format!(
            "rule {r} on {t} cannot be carried over; drop it before converting and re-create it afterwards"
        ));
    }
}

/// Identity columns and owned sequences, owner, grants, row-level security and policies.
pub(super) fn ownership_and_access(inv: &Inventory, p: &mut Preflight) {
    for s in &inv.sequences {
        if s.dependency == "i" {
            p.carried.push(format!(
                "identity column {} (the new table's identity continues from {})",
                s.column, s.sequence
            ));
        } else {
            p.carried.push(format!(
                "sequence {} owned by {} (ownership moves to the new table; ids continue)",
                s.sequence, s.column
            ));
        }
    }
    p.carried.push(format!("owner {}", inv.owner));
    for g in &inv.grants {
        p.carried.push(format!(
            "grant {} to {}{}",
            g.privilege,
            g.grantee.as_deref().unwrap_or("PUBLIC"),
            if g.grantable {
                " with grant option"
            } else {
                ""
            }
        ));
    }
    for g in &inv.column_grants {
        p.carried.push(format!(
            "grant {} ({}) to {}",
            g.grant.privilege,
            g.column,
            g.grant.grantee.as_deref().unwrap_or("PUBLIC")
        ));
    }
    if inv.rls_enabled {
        p.carried.push(format!(
            "row-level security enabled{}",
            if inv.rls_forced { " and forced" } else { "" }
        ));
    }
    for pol in &inv.policies {
        p.carried.push(format!(
            "policy {} {} FOR {} TO {}",
            pol.name,
            if pol.permissive {
                "PERMISSIVE"
            } else {
                "RESTRICTIVE"
            },
            pol.command,
            pol.roles.join(", ")
        ));
    }
    if inv.rls_forced {
        p.warnings.push(
            "FORCE ROW LEVEL SECURITY: the sync functions run as the migrating role; if that role is neither a superuser nor allowed by the policies, mirrored writes fail. Run the migration as a superuser or the table owner with BYPASSRLS"
                .into(),
        );
    }
}

/// Publications, replica identity, comment and storage options.
pub(super) fn replication_and_storage(inv: &Inventory, p: &mut Preflight) {
    let t = &inv.table;
    for pubname in &inv.publications {
        p.carried.push(format!("publication {pubname}"));
    }
    if !inv.publications.is_empty() || !inv.implicit_publications.is_empty() {
        p.warnings.push(format!(
            "{t} is published ({}); subscribers see a new table after the swap: create it on the subscriber as partitioned (or publish with publish_via_partition_root) and refresh the subscription",
            inv.publications.iter().chain(&inv.implicit_publications).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    match inv.replica_identity.as_str() {
        "f" | "n" | "d" => {}
        _ => p.warnings.push(
            "REPLICA IDENTITY USING INDEX is not carried over; the new table uses its primary key"
                .into(),
        ),
    }
    if let Some(c) = &inv.comment {
        p.carried.push(format!("comment {c:?}"));
    }
    if !inv.reloptions.is_empty() {
        p.carried.push(format!(
            "storage options {} (on every partition)",
            inv.reloptions.join(", ")
        ));
    }
}

/// The kinds of dependent object looked for and not found.
pub(super) fn none_found(inv: &Inventory) -> Vec<&'static str> {
    let kinds: [(&'static str, bool); 12] = [
        (
            "unique constraints",
            !inv.constraints.iter().any(|c| c.kind == "u"),
        ),
        (
            "check constraints",
            !inv.constraints.iter().any(|c| c.kind == "c"),
        ),
        (
            "foreign keys out",
            !inv.constraints.iter().any(|c| c.kind == "f"),
        ),
        ("foreign keys in", inv.inbound_fks.is_empty()),
        ("triggers", inv.triggers.is_empty()),
        ("views", inv.views.is_empty()),
        (
            "identity columns or owned sequences",
            inv.sequences.is_empty(),
        ),
        (
            "grants to other roles",
            inv.grants.is_empty() && inv.column_grants.is_empty(),
        ),
        (
            "row-level security or policies",
            !inv.rls_enabled && inv.policies.is_empty(),
        ),
        (
            "publications",
            inv.publications.is_empty() && inv.implicit_publications.is_empty(),
        ),
        ("comment", inv.comment.is_none()),
        ("storage options", inv.reloptions.is_empty()),
    ];
    let mut none_found: Vec<&'static str> = kinds
        .iter()
        .filter(|(_, none)| *none)
        .map(|(k, _)| *k)
        .collect();
    if inv.replica_identity == "d" {
        none_found.push("non-default replica identity");
    }
    none_found
}
