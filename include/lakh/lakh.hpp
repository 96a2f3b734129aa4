#pragma once
// lakh/lakh.hpp: the umbrella header for lakh's core (namespace lakh). It never includes
// libpqxx, hiredis or cnats; those adapters have their own umbrellas (lakh/pg.hpp, ...).

#include <lakh/error.hpp>
#include <lakh/status.hpp>
#include <lakh/version.hpp>
