//! Webhook deliveries as the preheater and the Harbor provider read them: Distribution
//! notification envelopes, Harbor's Default and CloudEvents payloads, Harbor's `resource_url`,
//! and the preheat job requests of both Harbor provider APIs. Every parser sees every input.
//!
//! Properties: no panic; a classified event warms something exactly when it gives no reason to
//! ignore it; what it asks to warm re-parses to itself; a parsed URL printed back parses the same.

#![no_main]

use damselfly_core::{Digest, Reference, RepositoryName};
use damselfly_harbor::provider::{legacy, oapi};
use damselfly_harbor::ManifestUrl;
use damselfly_preheater::events::{distribution, harbor, ClassifiedEvent, Intent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = distribution::parse(data) {
        for event in &envelope.events {
            let classified = event.classify();
            assert_eq!(classified.dedupe_key, format!("distribution:{}", event.id));
            assert!(classified.intents.len() <= 1, "{classified:?}");
            check_classified(&classified);
        }
    }
    if let Ok(classified) = harbor::parse_default(data) {
        assert!(classified.dedupe_key.starts_with("harbor:"));
        check_classified(&classified);
    }
    if let Ok(classified) = harbor::parse_cloudevent(data) {
        assert!(classified.dedupe_key.starts_with("cloudevents:"));
        check_classified(&classified);
    }
    for request in [legacy::parse(data), oapi::parse(data)].into_iter().flatten() {
        let again = ManifestUrl::parse(&request.origin.url).expect("a request's own URL re-parses");
        assert_eq!(again, request.manifest);
        check_names(&request.manifest.repository, &request.manifest.reference);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(url) = harbor::parse_resource_url(text) {
            let sep = match url.reference {
                Reference::Tag(_) => ':',
                Reference::Digest(_) => '@',
            };
            let printed = format!("{}/{}{sep}{}", url.host, url.repository, url.reference);
            assert_eq!(
                harbor::parse_resource_url(&printed).as_ref(),
                Ok(&url),
                "{printed}"
            );
            check_names(&url.repository, &url.reference);
        }
        if let Ok(url) = ManifestUrl::parse(text) {
            check_names(&url.repository, &url.reference);
        }
    }
});

fn check_classified(event: &ClassifiedEvent) {
    assert_eq!(event.intents.is_empty(), event.ignored.is_some(), "{event:?}");
    if !event.intents.is_empty() {
        assert!(matches!(event.action, "push" | "mount"), "{event:?}");
    }
    for intent in &event.intents {
        assert!(!intent.registry().is_empty(), "{intent:?}");
        match intent {
            Intent::Blob {
                repository, digest, ..
            }
            | Intent::Manifest {
                repository, digest, ..
            } => check_names(repository, &Reference::Digest(*digest)),
            Intent::Image {
                repository,
                reference,
                digest,
                ..
            } => {
                check_names(repository, reference);
                if let Some(d) = digest {
                    check_digest(d);
                }
            }
        }
    }
}

/// Validated names print as text that validates to the same name.
fn check_names(repository: &RepositoryName, reference: &Reference) {
    let name: RepositoryName = repository.as_str().parse().expect("a valid name re-parses");
    assert_eq!(&name, repository);
    let again: Reference = reference
        .to_string()
        .parse()
        .expect("a valid reference re-parses");
    assert_eq!(&again, reference);
    if let Reference::Digest(d) = reference {
        check_digest(d);
    }
}

fn check_digest(digest: &Digest) {
    assert_eq!(digest.to_string().parse::<Digest>().as_ref(), Ok(digest));
}
