//! Inventory: a page of the issuer's clients, those the caller may see, each with its last
//! rotation from the ledger and how long ago it was.

use super::{
    fakes::FakeVault,
    protocol::{command, seed, service, soon},
};
use std::time::Duration;

use crate::rotation::{AuthMethod, ClientId};

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

#[tokio::test]
async fn a_key_client_shows_its_method_attached_credentials_and_the_one_in_use() {
    let svc = service(FakeVault::default());
    let made_elsewhere = include_str!("../../emulator/credentials/seed-key.pub.pem");
    let old = svc.pipeline().issuer.add_key_client("kkk", made_elsewhere);
    let kkk = ClientId::parse("kkk").unwrap();
    let entry = |page: crate::rotation::Inventory| {
        page.entries
            .into_iter()
            .find(|e| e.client_id == kkk)
            .unwrap()
    };
    let page = crate::rotation::inventory::page(&svc, None, 10, |_| true)
        .await
        .unwrap();
    let before = entry(page);
    assert!(before.rotatable);
    assert_eq!(before.method, Some(AuthMethod::PrivateKeyJwt));
    let ids: Vec<_> = before.credentials.iter().map(|c| &c.info.id).collect();
    assert_eq!(ids, [&old]);
    assert!(before.credentials[0].in_use, "the only one attached");
    assert!(before.credentials[0].info.kid.is_some());

    let rotated = svc.rotate(command("kkk"), soon(10_000)).await.unwrap();
    let new = rotated.credential.unwrap().credential_id;
    let page = crate::rotation::inventory::page(&svc, None, 10, |_| true)
        .await
        .unwrap();
    let during = entry(page);
    let shown: Vec<_> = during
        .credentials
        .iter()
        .map(|c| (&c.info.id, c.in_use))
        .collect();
    assert_eq!(
        shown,
        [(&old, false), (&new, true)],
        "both during the overlap"
    );
    let age = during.credential_age.expect("created just now");
    assert!(age < Duration::from_secs(60), "{age:?}");
}
