// Load a torchstitch artifact from C++ and run it: the deployment check (tests/test_cpp_deploy.py).
//
//   deploy_check torchscript model.pt  inputs.bin outputs.bin
//   deploy_check aoti        model.pt2 inputs.bin outputs.bin
//
// inputs.bin / outputs.bin: int32 count, then per tensor int32 dtype (0 float32,
// 1 float64, 2 int64, 3 bool), int32 ndim, int64 sizes[ndim], the contiguous data.
// An undefined output tensor (a None in the model's outputs) is dtype -1, ndim 0, no data.
#include <torch/script.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <cstdint>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

at::ScalarType to_dtype(int32_t code) {
  switch (code) {
    case 0: return at::kFloat;
    case 1: return at::kDouble;
    case 2: return at::kLong;
    case 3: return at::kBool;
  }
  throw std::runtime_error("unknown dtype code " + std::to_string(code));
}

int32_t to_code(at::ScalarType dtype) {
  if (dtype == at::kFloat) return 0;
  if (dtype == at::kDouble) return 1;
  if (dtype == at::kLong) return 2;
  if (dtype == at::kBool) return 3;
  throw std::runtime_error("cannot write dtype " + std::string(c10::toString(dtype)));
}

std::vector<at::Tensor> read_tensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  int32_t count = 0;
  in.read(reinterpret_cast<char*>(&count), sizeof count);
  std::vector<at::Tensor> tensors;
  for (int32_t i = 0; i < count; ++i) {
    int32_t code = 0, ndim = 0;
    in.read(reinterpret_cast<char*>(&code), sizeof code);
    in.read(reinterpret_cast<char*>(&ndim), sizeof ndim);
    std::vector<int64_t> sizes(ndim);
    in.read(reinterpret_cast<char*>(sizes.data()), ndim * sizeof(int64_t));
    at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(to_dtype(code)));
    in.read(reinterpret_cast<char*>(t.data_ptr()), t.nbytes());
    tensors.push_back(t);
  }
  if (!in) throw std::runtime_error("truncated input file " + path);
  return tensors;
}

void write_tensors(const std::string& path, const std::vector<at::Tensor>& tensors) {
  std::ofstream out(path, std::ios::binary);
  int32_t count = static_cast<int32_t>(tensors.size());
  out.write(reinterpret_cast<const char*>(&count), sizeof count);
  for (const auto& tensor : tensors) {
    if (!tensor.defined()) {
      const int32_t none[2] = {-1, 0};
      out.write(reinterpret_cast<const char*>(none), sizeof none);
      continue;
    }
    at::Tensor t = tensor.contiguous();
    int32_t code = to_code(t.scalar_type()), ndim = static_cast<int32_t>(t.dim());
    out.write(reinterpret_cast<const char*>(&code), sizeof code);
    out.write(reinterpret_cast<const char*>(&ndim), sizeof ndim);
    out.write(reinterpret_cast<const char*>(t.sizes().data()), ndim * sizeof(int64_t));
    out.write(reinterpret_cast<const char*>(t.data_ptr()), t.nbytes());
  }
}

// Tensors of a TorchScript result: a tensor, or a (nested) tuple/list of them.
void flatten(const c10::IValue& value, std::vector<at::Tensor>& out) {
  if (value.isTensor()) {
    out.push_back(value.toTensor());
  } else if (value.isTuple()) {
    for (const auto& item : value.toTupleRef().elements()) flatten(item, out);
  } else if (value.isList()) {
    for (const auto& item : value.toListRef()) flatten(item, out);
  } else {
    throw std::runtime_error("unsupported output type " + value.tagKind());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: deploy_check torchscript|aoti MODEL INPUTS OUTPUTS\n";
    return 2;
  }
  const std::string kind = argv[1], model = argv[2];
  try {
    c10::InferenceMode guard;
    std::vector<at::Tensor> inputs = read_tensors(argv[3]);
    std::vector<at::Tensor> outputs;
    if (kind == "torchscript") {
      // --- the snippet in docs/deploying.md -----------------------------------
      torch::jit::script::Module module = torch::jit::load(model);
      module.eval();
      std::vector<c10::IValue> args(inputs.begin(), inputs.end());
      flatten(module.forward(args), outputs);
    } else if (kind == "aoti") {
      torch::inductor::AOTIModelPackageLoader loader(model);
      std::cout << "torchstitch.inputs=" << loader.get_metadata()["torchstitch.inputs"] << "\n";
      outputs = loader.run(inputs);
      // ------------------------------------------------------------------------
    } else {
      std::cerr << "unknown artifact kind " << kind << "\n";
      return 2;
    }
    write_tensors(argv[4], outputs);
  } catch (const std::exception& exc) {
    std::cerr << "deploy_check: " << exc.what() << "\n";
    return 1;
  }
  return 0;
}
