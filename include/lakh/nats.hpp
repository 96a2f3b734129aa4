#pragma once
// lakh/nats.hpp: the umbrella header for lakh::nats, lakh's NATS JetStream adapter over cnats
// (libnats-dev 3.x): an RAII connection with its JetStream context, streams created
// idempotently, batch publishing with per-message acknowledgements (stored / duplicate by
// Nats-Msg-Id / failed), a durable pull consumer with explicit acks, and consume(), the
// reconnecting consume loop. Link the CMake target lakh::nats. The core umbrella
// (lakh/lakh.hpp) never includes this. Docs: docs/nats.md.
//
// Not included here: lakh/nats/outbox_publisher.hpp, lakh::pg::outbox's JetStream publisher,
// which also needs lakh::pg (libpqxx); include it and link both targets.

#include <lakh/nats/jetstream.hpp>
#include <lakh/nats/pull_consumer.hpp>
