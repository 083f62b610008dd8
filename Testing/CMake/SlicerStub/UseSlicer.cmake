# Stand-in for Slicer's UseSlicer.cmake: brings in the kit's real Slicer and CTK macros, unchanged.

option(BUILD_TESTING "Register the module's tests" OFF)
if(BUILD_TESTING)
  enable_testing()
endif()

if(NOT DEFINED EXTENSION_NAME)
  set(EXTENSION_NAME ${PROJECT_NAME})
endif()

include(ExternalData)
include(${CTK_CMAKE_DIR}/ctkFunctionExtractOptimizedLibrary.cmake)
include(${CTK_CMAKE_DIR}/ctkMacroCompilePythonScript.cmake)
include(${Slicer_CMAKE_DIR}/SlicerMacroPythonTesting.cmake)
include(${Slicer_CMAKE_DIR}/SlicerMacroConfigureGenericPythonModuleTests.cmake)
include(${Slicer_CMAKE_DIR}/SlicerMacroBuildScriptedModule.cmake)
