//! Tenants, API keys and authentication.

#[macro_use]
mod common;

use nimbus_registry::{AuthError, DEFAULT_TENANT, RegistryError, Scope};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn bootstrap_creates_default_tenant_and_admin_key_exactly_once() {
    let (dir, registry) = common::open().await;
    let key = registry
        .bootstrap(None)
        .await
        .unwrap()
        .expect("first start creates a key");
    let tenants = registry.list_tenants().await.unwrap();
    assert_eq!(tenants.len(), 1);
    assert_eq!(tenants[0].name, DEFAULT_TENANT);
    let principal = registry.authenticate(&key).await.unwrap();
    assert_eq!(principal.tenant, DEFAULT_TENANT);
    assert_eq!(principal.scopes, vec![Scope::Admin]);
    assert_eq!(registry.bootstrap(None).await.unwrap(), None);
    drop(registry);

    let reopened = common::reopen(dir.path()).await;
    assert_eq!(reopened.bootstrap(None).await.unwrap(), None);
    assert_eq!(reopened.list_keys(DEFAULT_TENANT).await.unwrap().len(), 1);
    // The pepper survives the restart, so the key still works.
    assert_eq!(
        reopened.authenticate(&key).await.unwrap().tenant,
        DEFAULT_TENANT
    );
}

async fn bootstrap_with_configured_key_makes_that_exact_key_admin() {
    let (_dir, registry) = common::open().await;
    let key = format!("nmb_operator0001_{}", "Z9".repeat(20));
    assert_eq!(registry.bootstrap(Some(&key)).await.unwrap(), None);
    assert_eq!(registry.bootstrap(Some(&key)).await.unwrap(), None);
    let principal = registry.authenticate(&key).await.unwrap();
    assert_eq!(principal.tenant, DEFAULT_TENANT);
    assert_eq!(principal.key_id, "operator0001");
    assert!(principal.allows(Scope::Deploy));
    assert_eq!(registry.list_keys(DEFAULT_TENANT).await.unwrap().len(), 1);

    let err = registry.bootstrap(Some("not-a-key")).await.unwrap_err();
    assert!(matches!(err, RegistryError::BadRequest(_)), "{err:?}");
}

async fn authenticate_accepts_a_created_key_with_or_without_bearer_prefix() {
    let (_dir, registry) = common::open().await;
    registry.create_tenant("acme").await.unwrap();
    let (info, key) = registry
        .create_key("acme", &[Scope::Invoke, Scope::Deploy], None)
        .await
        .unwrap();
    assert_eq!(info.scopes, vec![Scope::Deploy, Scope::Invoke]);
    for token in [
        key.clone(),
        format!("Bearer {key}"),
        format!("bearer  {key} "),
    ] {
        let principal = registry.authenticate(&token).await.unwrap();
        assert_eq!(principal.tenant, "acme");
        assert_eq!(principal.key_id, info.key_id);
        assert!(principal.allows(Scope::Invoke));
        assert!(!principal.allows(Scope::Admin));
    }
}

async fn authenticate_rejects_a_missing_key() {
    let (_dir, registry) = common::open().await;
    for token in ["", "   ", "Bearer", "Bearer  "] {
        let err = registry.authenticate(token).await.unwrap_err();
        assert!(matches!(err, AuthError::Missing), "{token:?}: {err:?}");
    }
}

async fn authenticate_rejects_a_malformed_key() {
    let (_dir, registry) = common::open().await;
    for token in [
        "hello",
        "nmb_short_abcdefabcdefabcdefabcdefabcdefabcdef",
        "nmb_abcdefghijkl_tooshort",
        "nmb_abcdefghijkl_abcdef/abcdefabcdefabcdefabcdefabcdef",
        "Basic dXNlcjpwYXNz",
    ] {
        let err = registry.authenticate(token).await.unwrap_err();
        assert!(matches!(err, AuthError::Malformed), "{token:?}: {err:?}");
    }
}

async fn authenticate_rejects_an_unknown_key() {
    let (_dir, registry) = common::open().await;
    let key = registry.bootstrap(None).await.unwrap().unwrap();
    let unknown_id = format!("nmb_zzzzzzzzzzzz_{}", "a".repeat(64));
    let err = registry.authenticate(&unknown_id).await.unwrap_err();
    assert!(matches!(err, AuthError::Unknown), "{err:?}");

    // A known id with the wrong secret is just as unknown.
    let (prefix, secret) = key.rsplit_once('_').unwrap();
    let wrong = format!("{prefix}_{}", secret.replace(|c: char| c != '0', "0"));
    let err = registry.authenticate(&wrong).await.unwrap_err();
    assert!(matches!(err, AuthError::Unknown), "{err:?}");
}

async fn authenticate_rejects_a_revoked_key() {
    let (_dir, registry) = common::open().await;
    registry.create_tenant("acme").await.unwrap();
    let (info, key) = registry
        .create_key("acme", &[Scope::Invoke], None)
        .await
        .unwrap();
    registry.authenticate(&key).await.unwrap();
    registry.revoke_key("acme", &info.key_id).await.unwrap();
    registry.revoke_key("acme", &info.key_id).await.unwrap();
    let err = registry.authenticate(&key).await.unwrap_err();
    assert!(matches!(err, AuthError::Revoked), "{err:?}");
    let listed = registry.list_keys("acme").await.unwrap();
    assert!(listed[0].revoked_at.is_some());
}

async fn authenticate_rejects_an_expired_key() {
    let (_dir, registry) = common::open().await;
    registry.create_tenant("acme").await.unwrap();
    // Far enough ahead that a loaded machine still authenticates before it; then wait past it.
    let expires = now() + 3;
    let (_info, key) = registry
        .create_key("acme", &[Scope::Invoke], Some(expires))
        .await
        .unwrap();
    registry.authenticate(&key).await.unwrap();
    while now() <= expires {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let err = registry.authenticate(&key).await.unwrap_err();
    assert!(matches!(err, AuthError::Expired), "{err:?}");
}

async fn create_key_refuses_no_scopes_past_expiry_and_unknown_tenant() {
    let (_dir, registry) = common::open().await;
    registry.create_tenant("acme").await.unwrap();
    let err = registry.create_key("acme", &[], None).await.unwrap_err();
    assert!(matches!(err, RegistryError::BadRequest(_)), "{err:?}");
    let err = registry
        .create_key("acme", &[Scope::Invoke], Some(now() - 10))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::BadRequest(_)), "{err:?}");
    let err = registry
        .create_key("nobody", &[Scope::Invoke], None)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound(_)), "{err:?}");
}

async fn secrets_never_appear_in_any_file_of_the_data_dir() {
    let (dir, registry) = common::open().await;
    let mut keys = vec![registry.bootstrap(None).await.unwrap().unwrap()];
    registry.create_tenant("acme").await.unwrap();
    for scopes in [&[Scope::Invoke][..], &[Scope::Deploy, Scope::Admin][..]] {
        keys.push(registry.create_key("acme", scopes, None).await.unwrap().1);
    }
    for key in &keys {
        registry.authenticate(key).await.unwrap();
    }
    let first = registry.list_keys("acme").await.unwrap()[0].clone();
    registry.revoke_key("acme", &first.key_id).await.unwrap();

    let check = |when: &str| {
        let files = common::files_under(dir.path());
        if common::backend() == common::Backend::Sqlite {
            assert!(files.iter().any(|f| f.ends_with("registry.db")));
        }
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            for key in &keys {
                let secret = key.rsplit_once('_').unwrap().1;
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{when}: a key secret is in {}",
                    file.display()
                );
            }
        }
    };
    check("while open");
    drop(registry);
    check("after close");
}

async fn list_keys_shows_key_ids_and_scopes_but_no_secrets() {
    let (_dir, registry) = common::open().await;
    registry.create_tenant("acme").await.unwrap();
    let (info, key) = registry
        .create_key("acme", &[Scope::Deploy], None)
        .await
        .unwrap();
    let listed = registry.list_keys("acme").await.unwrap();
    assert_eq!(listed, vec![info]);
    let json = serde_json::to_string(&listed).unwrap();
    let secret = key.rsplit_once('_').unwrap().1;
    assert!(!json.contains(secret));
    assert!(json.contains("\"key_id\"") && json.contains("\"deploy\""));
}

async fn tenant_names_follow_the_name_rule_and_are_unique() {
    let (_dir, registry) = common::open().await;
    registry.create_tenant("acme-1.prod_x").await.unwrap();
    let err = registry.create_tenant("acme-1.prod_x").await.unwrap_err();
    assert!(matches!(err, RegistryError::Conflict(_)), "{err:?}");
    for bad in ["", "Acme", "-acme", "../etc", "a/b", &"a".repeat(64)] {
        let err = registry.create_tenant(bad).await.unwrap_err();
        match err {
            RegistryError::BadRequest(message) => {
                assert!(message.contains("[a-z0-9]"), "{message}")
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn admin_scope_allows_everything_and_others_only_themselves() {
    for needed in Scope::ALL {
        assert!(Scope::Admin.allows(needed));
    }
    assert!(Scope::Deploy.allows(Scope::Deploy));
    assert!(!Scope::Deploy.allows(Scope::Invoke));
    assert!(!Scope::Invoke.allows(Scope::Admin));
    assert_eq!(serde_json::to_string(&Scope::Invoke).unwrap(), "\"invoke\"");
}

on_both_backends!(
    bootstrap_creates_default_tenant_and_admin_key_exactly_once,
    bootstrap_with_configured_key_makes_that_exact_key_admin,
    authenticate_accepts_a_created_key_with_or_without_bearer_prefix,
    authenticate_rejects_a_missing_key,
    authenticate_rejects_a_malformed_key,
    authenticate_rejects_an_unknown_key,
    authenticate_rejects_a_revoked_key,
    authenticate_rejects_an_expired_key,
    create_key_refuses_no_scopes_past_expiry_and_unknown_tenant,
    secrets_never_appear_in_any_file_of_the_data_dir,
    list_keys_shows_key_ids_and_scopes_but_no_secrets,
    tenant_names_follow_the_name_rule_and_are_unique,
);
