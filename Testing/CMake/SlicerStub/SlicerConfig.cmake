# A stand-in for the SlicerConfig.cmake of a Slicer build, for building the extension without Slicer.
#
# It defines only what a real Slicer config gives an extension that the extension's CMake uses, and takes
# Slicer's and CTK's macros unchanged from the reference kit (../shared/slicer-reference, see its
# README.md): Testing/Python/test_slicer_extension_build.py configures the extension with
#   cmake -DSlicer_DIR=<this folder> -DSlicerStub_KIT_DIR=<kit> -DSlicerStub_TAG=v5.12.3
#         -DPYTHON_EXECUTABLE=<python> <repository>
# Nothing here builds or runs Slicer: the launcher named in the registered tests does not exist.

if(NOT SlicerStub_KIT_DIR OR NOT EXISTS "${SlicerStub_KIT_DIR}/index.json")
  message(FATAL_ERROR "SlicerStub: set SlicerStub_KIT_DIR to the slicer-reference kit (a folder with index.json)")
endif()
if(NOT SlicerStub_TAG)
  message(FATAL_ERROR "SlicerStub: set SlicerStub_TAG to a Slicer tag of the kit (e.g. v5.12.3)")
endif()
if(NOT PYTHON_EXECUTABLE)
  message(FATAL_ERROR "SlicerStub: set PYTHON_EXECUTABLE (a real Slicer config names its own Python)")
endif()

# The CTK commit that this Slicer tag pins, from the kit's index.
file(READ "${SlicerStub_KIT_DIR}/index.json" _slicerstub_index)
string(JSON _slicerstub_ctk_commit ERROR_VARIABLE _slicerstub_error
  GET "${_slicerstub_index}" slicer "${SlicerStub_TAG}" ctk_commit)
if(_slicerstub_error)
  message(FATAL_ERROR "SlicerStub: ${SlicerStub_KIT_DIR}/index.json has no Slicer tag ${SlicerStub_TAG}")
endif()

set(Slicer_CMAKE_DIR "${SlicerStub_KIT_DIR}/${SlicerStub_TAG}/CMake")
set(CTK_CMAKE_DIR "${SlicerStub_KIT_DIR}/ctk/${_slicerstub_ctk_commit}/CMake")
set(Slicer_PYTHON_MODULE_TEST_TEMPLATES_DIR "${SlicerStub_KIT_DIR}/${SlicerStub_TAG}/Base/QTCore/Testing/Python")

# Version and the module folders, spelled as Slicer spells them (lib/Slicer-<major>.<minor>/...).
string(REGEX MATCH "^v([0-9]+)\\.([0-9]+)\\.([0-9]+)$" _slicerstub_version "${SlicerStub_TAG}")
if(NOT _slicerstub_version)
  message(FATAL_ERROR "SlicerStub: SlicerStub_TAG '${SlicerStub_TAG}' is not of the form vX.Y.Z")
endif()
set(Slicer_VERSION_MAJOR ${CMAKE_MATCH_1})
set(Slicer_VERSION_MINOR ${CMAKE_MATCH_2})
set(Slicer_VERSION_PATCH ${CMAKE_MATCH_3})
set(Slicer_VERSION "${Slicer_VERSION_MAJOR}.${Slicer_VERSION_MINOR}.${Slicer_VERSION_PATCH}")
set(Slicer_MAIN_PROJECT_APPLICATION_NAME Slicer)
set(Slicer_LIB_DIR "lib/Slicer-${Slicer_VERSION_MAJOR}.${Slicer_VERSION_MINOR}")
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_LIB_DIR}/qt-scripted-modules")
set(Slicer_QTLOADABLEMODULES_LIB_DIR "${Slicer_LIB_DIR}/qt-loadable-modules")
set(Slicer_CLIMODULES_LIB_DIR "${Slicer_LIB_DIR}/cli-modules")
# Relative install locations: the extension package is unpacked into the Slicer install tree.
set(Slicer_INSTALL_ROOT "./")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_INSTALL_ROOT}${Slicer_QTSCRIPTEDMODULES_LIB_DIR}")

set(Slicer_USE_PYTHONQT ON)

# Python: the interpreter that byte-compiles the scripts (CTK's macro skips its find_package calls when
# these are set, as they are in a Slicer build) and its library folder (added to the loader path).
set(PYTHONINTERP_FOUND TRUE)
set(PYTHONLIBS_FOUND TRUE)
execute_process(
  COMMAND "${PYTHON_EXECUTABLE}" -c
    "import sysconfig, os; print(os.path.join(sysconfig.get_config_var('LIBDIR') or '', sysconfig.get_config_var('LDLIBRARY') or 'libpython.so'))"
  OUTPUT_VARIABLE PYTHON_LIBRARY OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _slicerstub_result)
if(NOT _slicerstub_result EQUAL 0)
  message(FATAL_ERROR "SlicerStub: PYTHON_EXECUTABLE '${PYTHON_EXECUTABLE}' does not run")
endif()
set(PYTHON_LIBRARIES "${PYTHON_LIBRARY}")

# Testing: what slicer_add_python_test / slicer_add_python_unittest use. The launcher only says that
# there is no Slicer (and fails), so that `ctest -N` lists the tests and running one fails clearly.
set(Slicer_LAUNCHER_EXECUTABLE "${CMAKE_CURRENT_LIST_DIR}/no-slicer-launcher")
set(Slicer_ADDITIONAL_LAUNCHER_SETTINGS)
set(Slicer_ExternalData_DATA_MANAGEMENT_TARGET ${PROJECT_NAME}Data)

set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionGenerateConfig.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionCPack.cmake")
