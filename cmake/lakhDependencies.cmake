# How lakh finds its dependencies. One place, used both by lakh's own CMakeLists.txt and by
# the installed lakhConfig.cmake, so that a consumer resolves them exactly as the build did.
#
# Each adapter's dependency becomes the imported target lakh_dependency::<adapter>. libpqxx is
# taken from its own CMake package where there is one (libpqxx 7 and 8 install it, Debian 12's
# 6.4 does not), with libpq from pkg-config; otherwise, and for hiredis and cnats, from
# pkg-config, which works for all three on Debian 12 (hiredis's CMake package needs a version
# and makes no target; cnats's points at a static library that is not shipped).
#
# lakh_find_adapter(<pg|redis|nats> [REQUIRED]) leaves the target defined when found; with
# REQUIRED a missing dependency stops configuration with a message naming the pkg-config
# modules missing and the Debian package that provides them (lakh_adapter_missing). For pg it
# also sets lakh_pqxx_version, the version of the libpqxx it found.

include_guard(GLOBAL)

macro(lakh_find_threads)
  if(NOT TARGET Threads::Threads)
    set(THREADS_PREFER_PTHREAD_FLAG ON)
    find_package(Threads ${ARGN})
  endif()
endmacro()

# The adapters: for each, the pkg-config modules (libpq too for pg: lakh/pg/conninfo.hpp calls
# it directly, and libpqxx's .pc file does not name it), the prefix of the imported target
# they make, and the Debian package that provides them.
set(lakh_adapters pg redis nats)
set(lakh_pg_modules libpqxx libpq)
set(lakh_pg_prefix LAKH_PQXX)
set(lakh_pg_debian libpqxx-dev)
set(lakh_redis_modules hiredis)
set(lakh_redis_prefix LAKH_HIREDIS)
set(lakh_redis_debian libhiredis-dev)
set(lakh_nats_modules libnats)
set(lakh_nats_prefix LAKH_NATS)
set(lakh_nats_debian libnats-dev)

function(lakh_find_adapter name)
  set(target lakh_dependency::${name})
  if(TARGET ${target})
    return()
  endif()
  set(CMAKE_FIND_PACKAGE_TARGETS_GLOBAL ON) # visible wherever lakh's exported targets are used
  set(link "")
  if(name STREQUAL "pg")
    find_package(libpqxx CONFIG QUIET)
    find_package(PkgConfig QUIET)
    if(TARGET libpqxx::pqxx AND PKG_CONFIG_FOUND)
      pkg_check_modules(LAKH_LIBPQ QUIET IMPORTED_TARGET GLOBAL libpq)
      if(TARGET PkgConfig::LAKH_LIBPQ)
        set(link libpqxx::pqxx PkgConfig::LAKH_LIBPQ)
        set(lakh_pqxx_version ${libpqxx_VERSION} PARENT_SCOPE)
      endif()
    endif()
  endif()
  if(NOT link)
    set(prefix ${lakh_${name}_prefix})
    find_package(PkgConfig QUIET)
    if(PKG_CONFIG_FOUND)
      pkg_check_modules(${prefix} QUIET IMPORTED_TARGET GLOBAL ${lakh_${name}_modules})
    endif()
    if(TARGET PkgConfig::${prefix})
      set(link PkgConfig::${prefix})
      if(name STREQUAL "pg")
        set(lakh_pqxx_version ${${prefix}_libpqxx_VERSION} PARENT_SCOPE)
      endif()
    endif()
  endif()
  if(link)
    add_library(${target} INTERFACE IMPORTED GLOBAL)
    set_target_properties(${target} PROPERTIES INTERFACE_LINK_LIBRARIES "${link}")
  elseif("REQUIRED" IN_LIST ARGN)
    lakh_adapter_missing(missing ${name})
    message(FATAL_ERROR "lakh: lakh::${name} was asked for, but ${missing}")
  endif()
endfunction()

# lakh_adapter_missing(<out> <adapter>): what is missing for the adapter, in words: the
# pkg-config modules that do not resolve (or pkg-config itself) and the Debian package to install.
function(lakh_adapter_missing out name)
  find_package(PkgConfig QUIET)
  if(NOT PKG_CONFIG_FOUND)
    set(${out}
        "pkg-config is not installed (install the Debian packages pkg-config and ${lakh_${name}_debian})"
        PARENT_SCOPE)
    return()
  endif()
  set(names "")
  foreach(m IN LISTS lakh_${name}_modules)
    pkg_check_modules(_lakh_probe QUIET ${m})
    if(NOT _lakh_probe_FOUND)
      list(APPEND names ${m})
    endif()
  endforeach()
  list(JOIN names ", " names)
  set(${out} "pkg-config cannot find ${names} (install the Debian package ${lakh_${name}_debian})"
      PARENT_SCOPE)
endfunction()
