//! Inventory: a page of the issuer's clients, those the caller may see, each with its last
//! rotation from the ledger and how long ago it was.

use super::{
    fakes::FakeVault,
    protocol::{command, seed, service, soon},
};
use crate::rotation::ClientId;

#[tokio::test]
async fn a_page_shows_visible_clients_with_their_last_rotation() {
    let svc = service(FakeVault::default());
    seed(&svc, &["c1", "c2", "c3"]);
    let rotated = svc.rotate(command("c2"), soon(10_000)).await.unwrap();

    // Seeded: abc, c1, c2, c3, other. Two pages of three, "c1" hidden from this caller.
    let hide_c1 = |id: &ClientId| id.as_str() != "c1";
    let first = crate::rotation::inventory::page(&svc, None, 3, hide_c1)
        .await
        .unwrap();
    let ids: Vec<&str> = first.entries.iter().map(|e| e.client_id.as_str()).collect();
    assert_eq!(ids, ["abc", "c2"], "c1 is not shown");
    let c2 = &first.entries[1];
    let (metadata, stored) = c2.last.as_ref().expect("rotated");
    assert_eq!(metadata.rotation_id, rotated.metadata.rotation_id);
    assert_eq!(stored.version, rotated.stored.version);
    assert!(c2.age.is_some());
    assert!(c2.rotatable);
    assert!(first.entries[0].last.is_none(), "never rotated");

    let second = crate::rotation::inventory::page(&svc, first.next.as_ref(), 3, hide_c1)
        .await
        .unwrap();
    let ids: Vec<&str> = second
        .entries
        .iter()
        .map(|e| e.client_id.as_str())
        .collect();
    assert_eq!(ids, ["c3", "other"]);
    assert!(second.next.is_none(), "the last page");
}
