#pragma once
// examples/billing_run/billing.hpp: the stages of the billing run (docs/case-study.md), each a
// function over one PostgreSQL database and (for events) one NATS JetStream server, one
// header each:
//
//   database.hpp  the schema `billing`, the load's parameters, a patient retrier, the counts
//   load.hpp      generator -> lakh::channel -> COPY, a chunk and its job in one transaction
//   work.hpp      lakh::pg::job_worker: rate a job's rows, sorted per-tenant advisory locks,
//                 totals, invoices and invoice.issued events through the outbox
//   events.hpp    outbox -> JetStream relay, and a consumer counting each event once (inbox)
//   verify.hpp    the spec's totals recomputed three ways and compared

#include "database.hpp"
#include "events.hpp"
#include "load.hpp"
#include "verify.hpp"
#include "work.hpp"
