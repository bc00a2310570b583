# What `cmake --install build --prefix P` puts under P, and the .deb CPack makes of it:
#   bin/troupe                               the runtime (its workers run the same binary)
#   include/troupe/plugin.h, plugin.hpp      the plugin contract
#   lib/troupe/plugins/<name>/               the example plugins (troupe_add_plugin installs them)
#   lib/cmake/Troupe/                        find_package(Troupe): Troupe::plugin, troupe_add_plugin()
#   share/pkgconfig/troupe-plugin.pc         the contract's flags for other build systems
#   share/troupe/examples/                   the example pipelines
include(CMakePackageConfigHelpers)
# Installing (and cpack) takes what is built; it never starts a build of its own.
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY ON)

install(TARGETS troupe RUNTIME DESTINATION bin)
install(DIRECTORY plugins/include/troupe DESTINATION include FILES_MATCHING PATTERN "*.h" PATTERN "*.hpp")
install(DIRECTORY examples/ DESTINATION share/troupe/examples FILES_MATCHING PATTERN "*.yaml")

set(TROUPE_INCLUDE_INSTALL_DIR include)
set(TROUPE_BIN_INSTALL_DIR bin)
set(TROUPE_PLUGIN_INSTALL_DIR lib/troupe/plugins)
foreach(part MAJOR MINOR)
  file(STRINGS plugins/include/troupe/plugin.h abi_line REGEX "^#define TROUPE_ABI_${part} [0-9]+u$")
  string(REGEX REPLACE "^#define TROUPE_ABI_${part} ([0-9]+)u$" "\\1" abi_${part} "${abi_line}")
endforeach()
set(TROUPE_ABI_VERSION "${abi_MAJOR}.${abi_MINOR}")
if(NOT TROUPE_ABI_VERSION MATCHES "^[0-9]+\\.[0-9]+$")
  message(FATAL_ERROR "cannot read the ABI version from plugins/include/troupe/plugin.h (got '${TROUPE_ABI_VERSION}')")
endif()
configure_package_config_file(cmake/TroupeConfig.cmake.in ${CMAKE_BINARY_DIR}/cmake/TroupeConfig.cmake
  INSTALL_DESTINATION lib/cmake/Troupe
  PATH_VARS TROUPE_INCLUDE_INSTALL_DIR TROUPE_BIN_INSTALL_DIR TROUPE_PLUGIN_INSTALL_DIR)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/cmake/TroupeConfigVersion.cmake
  COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES ${CMAKE_BINARY_DIR}/cmake/TroupeConfig.cmake ${CMAKE_BINARY_DIR}/cmake/TroupeConfigVersion.cmake
  cmake/TroupePlugin.cmake DESTINATION lib/cmake/Troupe)
configure_file(cmake/troupe-plugin.pc.in ${CMAKE_BINARY_DIR}/cmake/troupe-plugin.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/cmake/troupe-plugin.pc DESTINATION share/pkgconfig)

# cpack -G DEB (in the build directory): troupe_<version>_<arch>.deb, installing under /usr.
set(CPACK_PACKAGE_NAME troupe)
set(CPACK_PACKAGE_VENDOR "Troupe")
set(CPACK_PACKAGE_CONTACT "Troupe developers <troupe@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Actor-based, distributed plugin runtime (runtime, plugin SDK, example plugins)")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_GENERATOR DEB)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION devel)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
include(CPack)
