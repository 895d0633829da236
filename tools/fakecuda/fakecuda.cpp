// CUDA, as far as the host side of torch can tell, on a machine without it: a device guard
// (c10's FakeGuardImpl: streams, events and device indices that do nothing) and CUDA hooks that
// report CUDA as built, with a generator that says it lives on cuda:0. Loaded before torch is
// imported (torch reads the hooks once). No kernel runs on "cuda" tensors here: the fake-CUDA
// check (tools/fakecuda/__init__.py) runs them under FakeTensorMode, which computes only shapes,
// dtypes and devices.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/impl/FakeGuardImpl.h>

namespace {

C10_REGISTER_GUARD_IMPL(CUDA, c10::impl::FakeGuardImpl<c10::DeviceType::CUDA>);

struct CudaTaggedGenerator : at::CPUGeneratorImpl {
  CudaTaggedGenerator() {
    device_ = c10::Device(c10::DeviceType::CUDA, 0);
    key_set_ = c10::DispatchKeySet(c10::DispatchKey::CUDA);
  }
};

struct FakeCudaHooks : at::CUDAHooksInterface {
  explicit FakeCudaHooks(at::CUDAHooksArgs) {}
  void init() const override {}
  bool isBuilt() const override { return true; }
  bool hasCUDA() const override { return true; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return true; }
  c10::DeviceIndex deviceCount() const override { return 1; }
  int getNumGPUs() const override { return 1; }
  c10::DeviceIndex current_device() const override { return 0; }
  c10::DeviceIndex getCurrentDevice() const override { return 0; }
  const at::Generator& getDefaultGenerator(c10::DeviceIndex) const override {
    static at::Generator gen = at::make_generator<CudaTaggedGenerator>();
    return gen;
  }
  at::Generator getNewGenerator(c10::DeviceIndex) const override {
    return at::make_generator<CudaTaggedGenerator>();
  }
};

}  // namespace

namespace at {
C10_REGISTER_TYPED_CLASS(CUDAHooksRegistry, "CUDAHooks", FakeCudaHooks);
}  // namespace at
