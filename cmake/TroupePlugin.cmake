# troupe_add_plugin(NAME SOURCES... [MANIFEST plugin.yaml]): a Troupe plugin.
#
# Builds SOURCES into libtroupe_NAME.so under ${TROUPE_PLUGIN_OUTPUT_DIR}/NAME/ (default:
# <build>/plugins/NAME/) with the manifest copied beside it, so `troupe --plugin-path
# <build>/plugins` finds it, and installs both into <prefix>/lib/troupe/plugins/NAME/, where
# an installed troupe looks. The manifest defaults to NAME/plugin.yaml, else plugin.yaml, in
# the current source directory. Used by Troupe's own plugins and, through
# find_package(Troupe), by plugins built outside its tree.
include_guard(GLOBAL)

function(troupe_add_plugin name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "MANIFEST" "")
  if(NOT name MATCHES "^[a-z][a-z0-9_]*$")
    message(FATAL_ERROR "troupe_add_plugin: '${name}' is not a plugin name (lower-case letters, digits and _, "
                        "starting with a letter)")
  endif()
  set(sources ${arg_UNPARSED_ARGUMENTS})
  if(NOT sources)
    message(FATAL_ERROR "troupe_add_plugin(${name}): no source files")
  endif()
  set(manifest "${arg_MANIFEST}")
  if(NOT manifest)
    if(EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${name}/plugin.yaml")
      set(manifest "${CMAKE_CURRENT_SOURCE_DIR}/${name}/plugin.yaml")
    else()
      set(manifest "${CMAKE_CURRENT_SOURCE_DIR}/plugin.yaml")
    endif()
  elseif(NOT IS_ABSOLUTE "${manifest}")
    set(manifest "${CMAKE_CURRENT_SOURCE_DIR}/${manifest}")
  endif()
  if(NOT EXISTS "${manifest}")
    message(FATAL_ERROR "troupe_add_plugin(${name}): ${manifest} not found; a plugin needs its plugin.yaml")
  endif()
  set(out "${TROUPE_PLUGIN_OUTPUT_DIR}")
  if(NOT out)
    set(out "${CMAKE_BINARY_DIR}/plugins")
  endif()

  add_library(troupe_plugin_${name} MODULE ${sources})
  target_link_libraries(troupe_plugin_${name} PRIVATE Troupe::plugin)
  set_target_properties(troupe_plugin_${name} PROPERTIES
    OUTPUT_NAME troupe_${name}
    PREFIX lib
    CXX_VISIBILITY_PRESET hidden
    C_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LIBRARY_OUTPUT_DIRECTORY "${out}/${name}")
  # Copied at configure time; an edit of the manifest re-runs the copy.
  configure_file("${manifest}" "${out}/${name}/plugin.yaml" COPYONLY)
  install(TARGETS troupe_plugin_${name} LIBRARY DESTINATION lib/troupe/plugins/${name})
  install(FILES "${manifest}" DESTINATION lib/troupe/plugins/${name} RENAME plugin.yaml)
  set_property(GLOBAL APPEND PROPERTY TROUPE_PLUGINS troupe_plugin_${name})
endfunction()
