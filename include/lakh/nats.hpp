#pragma once
// lakh/nats.hpp: the umbrella header for lakh::nats (NATS JetStream over cnats). Link the
// CMake target lakh::nats. lakh/nats/outbox_publisher.hpp (which also needs lakh::pg) is not
// included here.

#include <lakh/nats/jetstream.hpp>
